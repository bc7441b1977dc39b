"""The contracts every component speaks: Batch → ModalityOutput → FusedOutput → ModelOutput.

Shapes: B batch, N tokens, D features. Masks are bool with True meaning "real data".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """A collated mini-batch.

    inputs:  per modality name, the processor's tensors, e.g.
             image: {"pixel_values": [B, C, H, W]}
             audio: {"features": [B, n_mels, T], "feature_mask": [B, T]}  (log-mel)
                    or {"input_values": [B, S], "attention_mask": [B, S]} (raw waveform, HF audio models)
             text:  {"input_ids": [B, L], "attention_mask": [B, L]}
             Absent samples hold zeros (or pad tokens) so encoders can run on the whole batch.
    present: per modality name, [B] bool — False where the sample lacks that modality.
    labels:  [B] long (multiclass) or [B, C] float (binary / multi-label); None when unlabelled.
    ids:     sample identifiers (manifest row id), for error messages, caches and reports.
    """

    inputs: dict[str, dict[str, Tensor]]
    present: dict[str, Tensor]
    labels: Tensor | None = None
    ids: list[str] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def __len__(self) -> int:
        for mask in self.present.values():
            return int(mask.shape[0])
        return 0 if self.labels is None else int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            inputs={m: {k: move(v) for k, v in d.items()} for m, d in self.inputs.items()},
            present={m: move(v) for m, v in self.present.items()},
            labels=None if self.labels is None else move(self.labels),
            ids=list(self.ids),
        )

    def select(self, modalities: list[str]) -> Batch:
        """The same batch restricted to some modalities (the others are dropped entirely)."""
        return Batch(
            inputs={m: self.inputs[m] for m in modalities if m in self.inputs},
            present={m: self.present[m] for m in modalities if m in self.present},
            labels=self.labels,
            ids=self.ids,
        )


@dataclass
class ModalityOutput:
    """What every encoder returns.

    tokens:  [B, N, D] per-token (patch / frame / word) features
    mask:    [B, N] bool, True for real tokens; all False for a sample that lacks the modality
    pooled:  [B, D] one vector per sample (zeros where the modality is absent)
    present: [B] bool, whether the sample has this modality at all
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor
    present: Tensor

    @property
    def dim(self) -> int:
        return int(self.pooled.shape[-1])


@dataclass
class FusedOutput:
    """What every fusion returns: pooled [B, D] and, for token-level fusions, tokens [B, N, D] + mask [B, N]."""

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None


@dataclass
class ModelOutput:
    """What MultimodalModel.forward returns.

    loss: mean over the batch; loss_terms: the same loss as sums + item counts (objectives.accumulation), which
    the Trainer uses to normalise accumulated gradients over a whole optimizer step.
    """

    logits: Tensor
    loss: Tensor | None = None
    fused: FusedOutput | None = None
    modality_outputs: dict[str, ModalityOutput] = field(default_factory=dict)
    loss_terms: dict = field(default_factory=dict)
