"""From-scratch audio encoders over log-mel features.

Inputs: ``features`` [B, n_mels, T] (log-mel) and ``feature_mask`` [B, T] bool (True = real frame; all False for
an absent sample). Padded frames are zeroed before every conv, so in eval mode a real frame's output does not
depend on how much padding the batch added, and the frame mask is downsampled with the same conv arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ENCODERS
from .base import Encoder
from .layers import ConvBlock2d, TransformerStack, conv_output_lengths, init_weights, sinusoidal_positions


def _features_and_mask(inputs: dict[str, Tensor], name: str, n_mels: int | None = None) -> tuple[Tensor, Tensor]:
    if "features" not in inputs:
        raise KeyError(
            f"{name} expects inputs['features'] [B, n_mels, T] (log-mel) and 'feature_mask' [B, T]; "
            f"got keys {sorted(inputs)} (raw-waveform inputs need an HF audio encoder: encoder 'hf')"
        )
    features = inputs["features"]
    if features.dim() != 3 or (n_mels is not None and features.shape[1] != n_mels):
        raise ValueError(
            f"{name} expects features [B, {n_mels or 'n_mels'}, T], got {list(features.shape)}; "
            f"set the encoder option n_mels (or processor n_mels) to match"
        )
    mask = inputs.get("feature_mask")
    if mask is None:
        mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.bool, device=features.device)
    return features, mask.to(torch.bool)


def _mask_from_lengths(lengths: Tensor, size: int) -> Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


@ENCODERS.register("audio_cnn")
class AudioCNN(Encoder):
    """2-D conv net over the (mel, time) plane; tokens = time frames after averaging over frequency.

    Every stage after the first halves both frequency and time, so 40 mels × 101 frames with the default
    channels (32, 64, 128) gives 26 tokens of width 128. Works for any n_mels.
    """

    kind = "audio"

    def __init__(
        self,
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        blocks_per_stage: int = 1,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        if not channels:
            raise ValueError("audio_cnn: channels must list at least one stage width")
        self.output_dim = int(channels[-1])
        self.blocks = nn.ModuleList()
        self.time_strides: list[int] = []
        previous = 1
        for stage, width in enumerate(channels):
            stride = 1 if stage == 0 else 2
            self.blocks.append(ConvBlock2d(previous, width, stride=stride, norm=norm))
            self.time_strides.append(stride)
            for _ in range(blocks_per_stage - 1):
                self.blocks.append(ConvBlock2d(width, width, norm=norm))
                self.time_strides.append(1)
            previous = width
        self.dropout = nn.Dropout(dropout)
        self.apply(init_weights)

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        features, mask = _features_and_mask(inputs, "audio_cnn")
        lengths = mask.sum(-1)
        x = features.unsqueeze(1)  # [B, 1, n_mels, T]
        for block, stride in zip(self.blocks, self.time_strides):
            x = x * mask[:, None, None, :].to(x.dtype)  # padded frames read as zeros, like the conv's own padding
            x = block(x)
            lengths = conv_output_lengths(lengths, kernel=3, stride=stride, padding=1)
            mask = _mask_from_lengths(lengths, x.shape[-1])
        tokens = self.dropout(x.mean(dim=2).transpose(1, 2))  # [B, T', D]
        return tokens, mask


@ENCODERS.register("audio_transformer")
class AudioTransformer(Encoder):
    """Conv subsampling over time (each layer: Conv1d k3 s2 + GELU) then a masked pre-norm transformer.

    Tokens [B, ~T / 2**subsample, dim] with sinusoidal positions (any length works). Mel bins are the
    Conv1d input channels, so ``n_mels`` must match the processor (the factory fills it in).
    """

    kind = "audio"

    def __init__(
        self,
        n_mels: int = 40,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        subsample: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.n_mels, self.output_dim = n_mels, dim
        convs, previous = [], n_mels
        for _ in range(subsample):
            convs.append(nn.Conv1d(previous, dim, kernel_size=3, stride=2, padding=1))
            previous = dim
        self.subsample = nn.ModuleList(convs)
        self.input_norm = nn.LayerNorm(dim) if subsample else None
        self.input_proj = nn.Linear(n_mels, dim) if not subsample else None
        self.drop = nn.Dropout(dropout)
        self.transformer = TransformerStack(dim, depth, heads, mlp_ratio, dropout)
        self.apply(init_weights)

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        features, mask = _features_and_mask(inputs, "audio_transformer", self.n_mels)
        lengths = mask.sum(-1)
        x = features  # [B, n_mels, T]
        for conv in self.subsample:
            x = F.gelu(conv(x * mask[:, None, :].to(x.dtype)))
            lengths = conv_output_lengths(lengths, kernel=3, stride=2, padding=1)
            mask = _mask_from_lengths(lengths, x.shape[-1])
        x = x.transpose(1, 2)  # [B, T', D]
        x = self.input_norm(x) if self.input_proj is None else self.input_proj(x)
        x = self.drop(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device))
        return self.transformer(x, mask), mask
