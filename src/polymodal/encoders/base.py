"""The one method vocabulary every encoder answers, whatever its modality."""

from __future__ import annotations

from torch import Tensor, nn

from ..types import ModalityOutput


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens. tokens [B, N, D], mask [B, N] bool → [B, D]; all-masked rows give zeros."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class Encoder(nn.Module):
    """Base class for modality encoders.

    Subclasses set ``kind`` ("image" | "audio" | "text") and ``output_dim`` and implement
    ``forward_features(inputs) -> (tokens [B, N, D], mask [B, N] bool)``. ``forward`` adds pooling and the
    per-sample ``present`` mask, so every encoder returns the same ModalityOutput.
    """

    kind: str = ""
    output_dim: int

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """[B, N, D] → [B, D]. Default: masked mean; encoders with a CLS token may override."""
        return masked_mean(tokens, mask)

    def forward(self, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        tokens, mask = self.forward_features(inputs)
        mask = mask & present.unsqueeze(1)
        pooled = self.pool(tokens, mask) * present.unsqueeze(1).to(tokens.dtype)
        return ModalityOutput(tokens=tokens, mask=mask, pooled=pooled, present=present)

    def freeze(self) -> Encoder:
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()
        return self
