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

    Encoders whose backbone computes its own pooled vector (a Hugging Face pooler) override
    ``forward_features_pooled`` instead, returning ``(tokens, mask, pooled [B, D] | None)``.
    """

    kind: str = ""
    output_dim: int
    _frozen: bool = False

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward_features_pooled(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """(tokens [B, N, D], mask [B, N] bool, pooled [B, D] or None to use ``pool``)."""
        tokens, mask = self.forward_features(inputs)
        return tokens, mask, None

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """[B, N, D] → [B, D]. Default: masked mean; encoders with a CLS token may override."""
        return masked_mean(tokens, mask)

    def forward(self, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        tokens, mask, pooled = self.forward_features_pooled(inputs)
        present = present.to(device=tokens.device, dtype=bool)
        mask = mask.to(bool) & present.unsqueeze(1)
        if pooled is None:
            pooled = self.pool(tokens, mask)
        pooled = pooled * present.unsqueeze(1).to(pooled.dtype)
        return ModalityOutput(tokens=tokens, mask=mask, pooled=pooled, present=present)

    def freeze(self) -> Encoder:
        """Stop training this encoder: no gradients, and eval mode that survives a later ``model.train()``.

        Keeping eval mode matters: a frozen encoder's BatchNorm running stats and dropout must not change.
        """
        for param in self.parameters():
            param.requires_grad_(False)
        self._frozen = True
        self.eval()
        return self

    def train(self, mode: bool = True) -> Encoder:
        return super().train(mode and not self._frozen)
