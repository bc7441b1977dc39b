"""What an alignment objective receives and how it is built.

An objective is an ``nn.Module`` registered in ``OBJECTIVES``. The alignment model builds each one as
``cls(setup, **options)`` and calls it once per modality pair with a ``PairInputs``; it returns a scalar loss
(or ``None`` when it does not apply to that pair, e.g. MLM on an image-audio pair).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..types import Batch, ModalityOutput


@dataclass
class ModalitySpec:
    """Static facts about one modality that objectives need to size their layers.

    token_dim: width of the encoder's tokens [B, N, token_dim]
    vocab_size / mask_token_id / pad_token_id / special_token_ids: text modalities only (MLM)
    """

    name: str
    kind: str
    token_dim: int
    vocab_size: int | None = None
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    special_token_ids: tuple[int, ...] = ()


@dataclass
class ObjectiveSetup:
    """Everything an objective's constructor may use: the shared embedding width, modalities, pairs."""

    embed_dim: int
    modalities: dict[str, ModalitySpec]
    pairs: list[tuple[str, str]]


@dataclass
class PairInputs:
    """One modality pair, restricted to the samples that have both modalities (n rows).

    emb_a, emb_b:  [n, E] L2-normalised embeddings (row i of a matches row i of b)
    logit_scale:   scalar, already exponentiated and clamped (multiply cosine similarities by it)
    logit_bias:    scalar or None (SigLIP)
    out_a, out_b:  encoder outputs (tokens [n, N, D], mask [n, N]) for token-level objectives
    inputs_a/b:    the processor tensors of those rows (MLM re-encodes masked text from them)
    group_ids:     [n] long or None — samples with equal ids count as positives of each other
    encode:        ``encode(modality, inputs, present) -> ModalityOutput`` re-runs an encoder (MLM)
    """

    a: str
    b: str
    emb_a: Tensor
    emb_b: Tensor
    logit_scale: Tensor
    logit_bias: Tensor | None = None
    out_a: ModalityOutput | None = None
    out_b: ModalityOutput | None = None
    inputs_a: dict[str, Tensor] = field(default_factory=dict)
    inputs_b: dict[str, Tensor] = field(default_factory=dict)
    group_ids: Tensor | None = None
    encode: Callable[[str, dict[str, Tensor], Tensor], ModalityOutput] | None = None

    def __len__(self) -> int:
        return int(self.emb_a.shape[0])


class Objective(nn.Module):
    """Base class: ``forward(pair) -> scalar loss | None`` (a mean over the pair's items).

    For gradient accumulation (objectives.accumulation) an objective also says, before the forward pass, how
    many items that mean is over: ``count(pair)``; ``prepare(batch)`` draws beforehand anything the count
    depends on (MLM masks).
    """

    # Whether forward reads the encoders' token outputs (PairInputs.out_a / out_b .tokens), not only the pooled
    # embeddings: a feature cache then keeps tokens. True unless an objective says otherwise (the safe default).
    reads_tokens: ClassVar[bool] = True

    def __init__(self, setup: ObjectiveSetup):
        super().__init__()
        self.setup = setup

    def raw_input_modalities(self) -> set[str]:
        """Modalities whose processor inputs forward re-encodes (through ``PairInputs.encode``), so their encoder
        outputs cannot come from a feature cache. Empty by default; MLM: its text modalities."""
        return set()

    def forward(self, pair: PairInputs) -> Tensor | None:
        raise NotImplementedError

    def count(self, pair: PairInputs) -> int | None:
        """Items the loss of ``pair`` averages over (here: its samples); None when the objective does not apply.

        Must read only ``len(pair)``, ``group_ids`` and ``inputs_a`` / ``inputs_b`` — never the embeddings — so
        that a whole optimizer step can be counted before any of it runs.
        """
        return len(pair)

    def prepare(self, batch: Batch) -> Batch:
        """Return ``batch`` with whatever random choice the loss's item count depends on already drawn."""
        return batch


def zero_loss(*tensors: Tensor | None) -> Tensor:
    """A 0.0 loss still connected to the graph, so ``loss.backward()`` works when nothing applied."""
    total = None
    for tensor in tensors:
        if tensor is not None and tensor.requires_grad:
            term = tensor.sum() * 0.0
            total = term if total is None else total + term
    if total is None:
        ref = next((t for t in tensors if t is not None), None)
        return torch.zeros((), device=None if ref is None else ref.device)
    return total


def same_group(group_a: Tensor | None, group_b: Tensor | None, n_a: int, n_b: int, offset: int = 0,
               device: torch.device | None = None) -> Tensor:
    """Positive mask [n_a, n_b]: equal group ids, or the shifted diagonal (row i ↔ column offset + i)."""
    if group_a is not None and group_b is not None:
        return group_a.view(-1, 1) == group_b.view(1, -1)
    rows = torch.arange(n_a, device=device).view(-1, 1) + offset
    return rows == torch.arange(n_b, device=device).view(1, -1)
