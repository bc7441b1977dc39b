"""Building blocks shared by the from-scratch presets: masked pre-norm transformer, conv blocks, init."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_weights(module: nn.Module) -> None:
    """ViT/BERT-style init: truncated normal (std 0.02) for linear/embedding, Kaiming for convs."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def safe_key_mask(mask: Tensor) -> Tensor:
    """[B, N] bool → the same, with all-False rows turned all-True.

    A row with no real key (an absent sample) would make softmax divide 0 by 0 → NaN that then leaks into
    gradients. Letting those rows attend everywhere keeps the numbers finite; their outputs are masked later.
    """
    return mask | ~mask.any(dim=-1, keepdim=True)


class SelfAttention(nn.Module):
    """Multi-head self-attention via F.scaled_dot_product_attention. x [B, N, D], mask [B, N] → [B, N, D]."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # each [B, H, N, Dh]
        attn_mask = None if mask is None else safe_key_mask(mask)[:, None, None, :]  # True = may attend
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """``depth`` pre-norm blocks + a final LayerNorm. x [B, N, D], mask [B, N] bool (True = real)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed sin/cos position codes [length, dim] (no length limit, nothing to learn)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


def interpolate_grid_positions(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Resize learned 2-D position embeddings [1, h*w, D] → [1, H*W, D] (bicubic), as timm does."""
    if old_grid == new_grid:
        return pos
    dim = pos.shape[-1]
    grid = pos.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


def sincos_grid_features(height: int, width: int, num_frequencies: int = 8, device=None) -> Tensor:
    """Fixed 2-D sine-cosine features of a ``height`` × ``width`` grid, row-major: [H * W, 4 * num_frequencies].

    Each token's (y, x) centre, scaled to [0, 1], enters sin and cos at frequencies π·2^k, k = 0 … F-1 (the
    2-D sin-cos position encoding of MAE / MoCo v3, Chen et al. 2021 arXiv:2104.02057, here on normalised
    coordinates so that a grid of any size maps to the same range).
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=device, dtype=torch.float32)
    angles = torch.cat([grid_y.reshape(-1, 1) * freqs, grid_x.reshape(-1, 1) * freqs], dim=1)  # [H*W, 2F]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def conv_output_lengths(lengths: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    """How many output frames a conv leaves from ``lengths`` real input frames (0 stays 0)."""
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor").add(1).clamp_min(0)


def norm_2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # Per-sample statistics: zero-filled absent samples and padding cannot shift other samples' features.
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class ConvBlock2d(nn.Sequential):
    """conv3×3 → norm → GELU. x [B, C_in, H, W] → [B, C_out, H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | tuple[int, int] = 1, norm: str = "batch"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            norm_2d(norm, out_channels),
            nn.GELU(),
        )
