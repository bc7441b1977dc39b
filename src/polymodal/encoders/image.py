"""From-scratch image encoders: a small conv net and a tiny ViT. Input ``pixel_values`` [B, C, H, W]."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import ENCODERS
from .base import Encoder
from .layers import (
    ConvBlock2d,
    TransformerStack,
    init_weights,
    interpolate_grid_positions,
    sincos_grid_features,
)

POSITION_FREQUENCIES = 8  # sin-cos frequencies per axis of ImageCNN(positions=True)


def _pixel_values(inputs: dict[str, Tensor], in_channels: int, name: str) -> Tensor:
    if "pixel_values" not in inputs:
        raise KeyError(f"{name} expects inputs['pixel_values'] [B, C, H, W]; got keys {sorted(inputs)}")
    pixels = inputs["pixel_values"]
    if pixels.dim() != 4 or pixels.shape[1] != in_channels:
        raise ValueError(
            f"{name} expects pixel_values [B, {in_channels}, H, W], got {list(pixels.shape)}; "
            f"set the encoder option in_channels (or processor channels) to match"
        )
    return pixels


@ENCODERS.register("image_cnn")
class ImageCNN(Encoder):
    """Small conv net: stages of conv-norm-GELU blocks, each later stage halving the resolution.

    Tokens are the spatial positions of the last feature map: [B, H' * W', channels[-1]], all real.
    16 px input with the default channels (32, 64, 128) gives 4 × 4 = 16 tokens of width 128.

    ``positions``: add a learned projection of each token's fixed 2-D sin-cos position
    (:func:`~.layers.sincos_grid_features`) to it. A conv net's features say little about where in the image
    they are (only the zero padding near the borders does), which a pooled classifier does not need but a
    language model reading the tokens as a sequence does ("is the red circle left of the blue square?").
    The projection starts at zero, so a model starts from the plain conv features.
    """

    kind = "image"

    def __init__(
        self,
        in_channels: int = 3,
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        blocks_per_stage: int = 1,
        norm: str = "batch",
        dropout: float = 0.0,
        positions: bool = False,
    ):
        super().__init__()
        if not channels:
            raise ValueError("image_cnn: channels must list at least one stage width")
        self.in_channels = in_channels
        self.output_dim = int(channels[-1])
        layers: list[nn.Module] = []
        previous = in_channels
        for stage, width in enumerate(channels):
            layers.append(ConvBlock2d(previous, width, stride=1 if stage == 0 else 2, norm=norm))
            layers += [ConvBlock2d(width, width, norm=norm) for _ in range(blocks_per_stage - 1)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.positions = nn.Linear(4 * POSITION_FREQUENCIES, self.output_dim) if positions else None
        self.apply(init_weights)
        if self.positions is not None:
            nn.init.zeros_(self.positions.weight)
            nn.init.zeros_(self.positions.bias)

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        pixels = _pixel_values(inputs, self.in_channels, "image_cnn")
        feature_map = self.features(pixels)  # [B, D, H', W']
        tokens = feature_map.flatten(2).transpose(1, 2)  # [B, H' * W', D]
        if self.positions is not None:
            grid = sincos_grid_features(*feature_map.shape[-2:], POSITION_FREQUENCIES, device=tokens.device)
            tokens = tokens + self.positions(grid.to(tokens.dtype))
        tokens = self.dropout(tokens)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask


@ENCODERS.register("image_vit")
class ImageViT(Encoder):
    """Tiny ViT: patch embedding + CLS token + learned positions + pre-norm transformer blocks.

    Tokens [B, 1 + (H/p)(W/p), dim] (CLS first). Position embeddings are learned for ``image_size`` and
    resized bicubically when an input of another size arrives. Pooling: "cls" (default) or "mean".
    """

    kind = "image"

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pooling: str = "cls",
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_vit: image_size {image_size} is not a multiple of patch_size {patch_size}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"image_vit: pooling must be 'cls' or 'mean', got {pooling!r}")
        self.in_channels, self.patch_size, self.pooling = in_channels, patch_size, pooling
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.output_dim = dim
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        self.pos_drop = nn.Dropout(dropout)
        self.transformer = TransformerStack(dim, depth, heads, mlp_ratio, dropout)
        self.apply(init_weights)
        # Patch embedding is a linear map of a patch: init it like one (as ViT does), not like a conv.
        nn.init.trunc_normal_(self.patch_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        pixels = _pixel_values(inputs, self.in_channels, "image_vit")
        height, width = pixels.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image_vit: image size {height}×{width} is not a multiple of patch_size {self.patch_size}"
            )
        patches = self.patch_embed(pixels)  # [B, D, H/p, W/p]
        grid = (patches.shape[-2], patches.shape[-1])
        patches = patches.flatten(2).transpose(1, 2)  # [B, N, D]
        pos = self.pos_embed
        pos = torch.cat([pos[:, :1], interpolate_grid_positions(pos[:, 1:], self.grid, grid)], dim=1)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = self.pos_drop(torch.cat([cls, patches], dim=1) + pos)
        tokens = self.transformer(tokens)  # every token is real: no attention mask needed
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return tokens[:, 0]
        return super().pool(tokens[:, 1:], mask[:, 1:])
