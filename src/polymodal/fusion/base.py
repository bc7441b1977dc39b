"""Base class for fusion modules: dict[name, ModalityOutput] → FusedOutput."""

from __future__ import annotations

from torch import nn

from ..types import FusedOutput, ModalityOutput


class Fusion(nn.Module):
    """Every fusion is built as ``cls(modalities=[...], dim=D, **options)``.

    Inputs arrive already projected to width ``dim`` (the model adds one linear projection per modality),
    so a fusion only decides how to combine them. It must handle samples where a modality is absent
    (``present`` False, token mask all False): zero contribution or masked attention, never a crash or NaN.
    ``output_dim`` is the width of FusedOutput.pooled, which the task head consumes.
    """

    output_dim: int

    def __init__(self, modalities: list[str], dim: int):
        super().__init__()
        self.modalities = list(modalities)
        self.dim = dim
        self.output_dim = dim

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        raise NotImplementedError
