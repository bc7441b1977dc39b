"""Normalisation layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm whose statistics are always computed in fp32 (low-precision inputs are upcast and cast back).

    x [..., D] → [..., D] in x's dtype. Why: bf16/fp16 variance over D = 768 loses enough precision to move
    CLIP embeddings (open_clip's ``LayerNormFp32`` does the same).
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float32, torch.float64):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)
