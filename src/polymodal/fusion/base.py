"""Base class for fusion modules: dict[name, ModalityOutput] → FusedOutput.

Shapes: B batch, M modalities (in the order given at construction), N_m tokens of modality m, D fusion width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..types import FusedOutput, ModalityOutput


class Fusion(nn.Module):
    """Every fusion is built as ``cls(modalities=[...], dim=D, **options)``.

    Inputs arrive already projected to width ``dim`` (the model adds one linear projection per modality),
    so a fusion only decides how to combine them. It must handle samples where a modality is absent
    (``present`` False, token mask all False) and modalities missing from the dict altogether (absent for
    every sample): zero contribution, renormalised weights or masked attention, never a crash or NaN.
    An absent modality's values must not influence the output (encoders may leave garbage there).
    ``output_dim`` is the width of FusedOutput.pooled, which the task head consumes.

    The helpers below give subclasses sanitised views of the inputs, so each fusion only writes its maths.
    """

    output_dim: int

    def __init__(self, modalities: list[str], dim: int):
        super().__init__()
        if not modalities:
            raise ValueError(f"{type(self).__name__}: modalities is empty; name at least one modality")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"{type(self).__name__}: duplicate modality names in {list(modalities)}")
        if int(dim) <= 0:
            raise ValueError(f"{type(self).__name__}: dim must be a positive integer, got {dim!r}")
        self.modalities = list(modalities)
        self.dim = int(dim)
        self.output_dim = self.dim

    def forward(self, outputs: dict[str, ModalityOutput]) -> FusedOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ validation

    def validate(self, outputs: dict[str, ModalityOutput]) -> ModalityOutput:
        """Check names and shapes; return one of the outputs (the reference for batch size, device, dtype)."""
        name = type(self).__name__
        if not outputs:
            raise ValueError(f"{name}: got no modality at all; expected some of {self.modalities}")
        unknown = [key for key in outputs if key not in self.modalities]
        if unknown:
            raise ValueError(f"{name} was built for modalities {self.modalities}, got unexpected {unknown}")
        reference = next(iter(outputs.values()))
        batch = reference.present.shape[0]
        for key, out in outputs.items():
            tokens_ok = out.tokens.dim() == 3 and out.tokens.shape[0] == batch and out.tokens.shape[2] == self.dim
            if not tokens_ok or tuple(out.mask.shape) != tuple(out.tokens.shape[:2]):
                raise ValueError(
                    f"{name}: modality {key!r} has tokens {tuple(out.tokens.shape)} and mask {tuple(out.mask.shape)};"
                    f" expected tokens [B={batch}, N, D={self.dim}] and mask [B, N]"
                )
            if tuple(out.pooled.shape) != (batch, self.dim) or tuple(out.present.shape) != (batch,):
                raise ValueError(
                    f"{name}: modality {key!r} has pooled {tuple(out.pooled.shape)} and present "
                    f"{tuple(out.present.shape)}; expected [B={batch}, D={self.dim}] and [B={batch}]"
                )
        return reference

    # ------------------------------------------------------------------------------------------ sanitised views

    def gather_pooled(self, outputs: dict[str, ModalityOutput]) -> tuple[Tensor, Tensor]:
        """pooled [B, M, D] with exact zeros where absent, and present [B, M] bool (False for missing keys)."""
        reference = self.validate(outputs)
        batch, device, dtype = reference.present.shape[0], reference.pooled.device, reference.pooled.dtype
        pooled, present = [], []
        for name in self.modalities:
            out = outputs.get(name)
            if out is None:  # the batch does not carry this modality: absent for every sample
                pooled.append(torch.zeros(batch, self.dim, device=device, dtype=dtype))
                present.append(torch.zeros(batch, device=device, dtype=torch.bool))
                continue
            flag = out.present.to(device=device, dtype=torch.bool)
            # where, not multiply: 0 * NaN is NaN, and an absent sample may hold anything
            pooled.append(torch.where(flag.unsqueeze(-1), out.pooled, torch.zeros((), dtype=dtype, device=device)))
            present.append(flag)
        return torch.stack(pooled, dim=1), torch.stack(present, dim=1)

    def gather_tokens(self, outputs: dict[str, ModalityOutput]) -> list[tuple[int, Tensor, Tensor]]:
        """For each modality in the dict (construction order): (index m, tokens [B, N_m, D], mask [B, N_m]).

        The mask is ``mask & present`` and masked tokens are exact zeros, so nothing an absent sample holds
        can leak into attention (a masked key gets weight 0, but 0 * NaN would still be NaN).
        """
        self.validate(outputs)
        views = []
        for index, name in enumerate(self.modalities):
            out = outputs.get(name)
            if out is None:
                continue
            mask = out.mask.to(torch.bool) & out.present.to(torch.bool).unsqueeze(1)
            tokens = torch.where(mask.unsqueeze(-1), out.tokens, torch.zeros((), dtype=out.tokens.dtype,
                                                                             device=out.tokens.device))
            views.append((index, tokens, mask))
        return views


def check_option(fusion: str, option: str, value: object, kind: str) -> None:
    """Raise a clear error for a bad option value; ``kind`` is "positive int" or "probability"."""
    if kind == "positive int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    elif kind == "probability":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown option kind {kind!r}")
    if not ok:
        raise ValueError(f"fusion {fusion!r}: option {option!r} must be a {kind}, got {value!r}")
