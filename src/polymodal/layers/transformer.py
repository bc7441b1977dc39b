"""Pre-LN transformer blocks with one fused QKV projection and ``F.scaled_dot_product_attention``.

Written for CLIP's towers (OpenAI CLIP / open_clip ``ResidualAttentionBlock``: x + attn(ln_1(x)),
x + mlp(ln_2(x))): head split/merge are views (the only copy is the one SDPA's kernel layout needs, and the
backward assembles the q/k/v gradients with a single copy), ``is_causal`` for text, a one-query path for
pooled-only outputs, and optional gradient checkpointing per block. The projections are ``layers.gemm.linear``:
``F.linear`` whose CPU fp32 products run on oneDNN where that is faster than MKL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .gemm import linear
from .mlp import FusedMLP, fused_mlp_supported, quick_gelu
from .norms import LayerNormFp32


def _plain(module: nn.Module) -> bool:
    """True for an unwrapped nn.Linear. A PEFT adapter (LoRA, IA3, ...) replaces the layer by a wrapper whose
    ``.weight`` is still the base weight: reading it directly would silently skip the adapter, so wrapped layers
    are called as modules instead of through the fast weight paths."""
    return type(module) is nn.Linear


def _project(module: nn.Module, x: Tensor) -> Tensor:
    return linear(x, module.weight, module.bias) if _plain(module) else module(x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x)). tokens [B, N, D] → [B, N, D].

    ``act``: "quick_gelu" or "gelu". Raises nothing at build time beyond torch's own checks; ``width`` must be
    divisible by ``heads`` (the caller's config validates it, e.g. ``CLIPNativeConfig``).
    """

    def __init__(self, width: int, heads: int, mlp_dim: int, act: str, eps: float):
        super().__init__()
        self.heads = heads
        self.ln_1 = LayerNormFp32(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)  # rows ordered [q; k; v], like open_clip's in_proj
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = LayerNormFp32(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)
        self.act_name = act
        self.act = quick_gelu if act == "quick_gelu" else F.gelu

    def mlp(self, x: Tensor) -> Tensor:
        h = self.ln_2(x)
        if _plain(self.fc1) and _plain(self.fc2) and fused_mlp_supported(h, self.fc1.weight):
            # the fused function's backward works in the forward's dtypes, which autocast would change
            out = FusedMLP.apply(h.reshape(-1, h.shape[-1]), self.fc1.weight, self.fc1.bias, self.fc2.weight,
                                 self.fc2.bias, self.act_name)
            return out.view(*h.shape[:-1], out.shape[-1])
        return self.fc2(self.act(self.fc1(h)))

    def forward(self, x: Tensor, causal: bool = False, attn_mask: Tensor | None = None) -> Tensor:
        """x [B, N, D]; attn_mask [B, 1, N, N] bool (True = may attend) or None."""
        batch, length, width = x.shape
        qkv = _project(self.qkv, self.ln_1(x))
        # [B, N, 3, H, hd] → three [B, H, N, hd] views: no copy before SDPA. Unbinding dim 2 (not a leading
        # dim of a permuted view) makes the backward stack the q/k/v grads straight into the [B, N, 3D] layout
        # of the qkv output: one copy, where permute-then-unbind needs a stack plus a transposing clone.
        q, k, v = (t.transpose(1, 2) for t in qkv.view(batch, length, 3, self.heads, -1).unbind(2))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
        x = x + _project(self.out_proj, attn.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(x)

    def forward_query(self, x: Tensor, query_index: Tensor | None, key_mask: Tensor | None) -> Tensor:
        """The block's output at one position per sample: x [B, N, D] → [B, D].

        query_index [B] long (None = position 0, the CLS token); key_mask [B, N] bool keys that position sees.
        Keys/values are computed for every position, queries, out_proj and the MLP for one token only.
        """
        batch, length, width = x.shape
        if not (_plain(self.qkv) and _plain(self.out_proj)):  # adapted projections: the full-sequence path
            x = self.forward(x, False, None if key_mask is None else key_mask[:, None, None, :])
            return x[:, 0] if query_index is None else x[torch.arange(batch, device=x.device), query_index]
        # split (not slicing) so that the backward is one cat per tensor instead of zero-filled full-size grads
        w_q, w_kv = self.qkv.weight.split([width, 2 * width])
        b_q, b_kv = self.qkv.bias.split([width, 2 * width])
        k, v = (t.transpose(1, 2) for t in linear(self.ln_1(x), w_kv, b_kv).view(
            batch, length, 2, self.heads, -1).unbind(2))
        # the query token is picked once and normalised again (one row): a second gather from ln_1(x) would
        # cost another zero-filled [B, N, D] gradient in the backward
        x_q = x[:, 0] if query_index is None else x[torch.arange(batch, device=x.device), query_index]
        q = linear(self.ln_1(x_q), w_q, b_q).view(batch, self.heads, 1, -1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, 1, hd]
        x_q = x_q + linear(attn.reshape(batch, width), self.out_proj.weight, self.out_proj.bias)
        return x_q + self.mlp(x_q)


class Transformer(nn.Module):
    """``layers`` ResidualAttentionBlocks: tokens [B, N, D] → [B, N, D].

    ``skip_last=True`` stops before the last block, for callers that finish with its ``forward_query`` (one
    pooled position). ``gradient_checkpointing`` recomputes each block in the backward (training only).
    """

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        mlp_dim = round(width * mlp_ratio)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_dim, act, eps) for _ in range(layers))
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, causal: bool = False, attn_mask: Tensor | None = None,
                skip_last: bool = False) -> Tensor:
        blocks = self.blocks[:-1] if skip_last else self.blocks
        for block in blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, attn_mask, use_reentrant=False)
            else:
                x = block(x, causal, attn_mask)
        return x
