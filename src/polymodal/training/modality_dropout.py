"""Modality dropout: during training, hide whole modalities per sample so the model learns to cope without them.

Applied as a Batch transform in the training loop (before ``model(batch)``)::

    dropout = ModalityDropout(p=cfg.train.modality_dropout, seed=cfg.train.seed)
    for batch in loader:
        batch = dropout(batch)          # training only; evaluation batches are never touched
        loss = model(batch).loss

A dropped modality gets ``present`` False for that sample; its input tensors are left as they are because every
encoder and fusion already masks absent samples (mask & present, pooled zeroed).

Guarantee and rate: a sample always keeps at least ``min_keep`` of the modalities it has (never all dropped),
and among samples that have all their droppable modalities, each one is dropped with probability exactly ``p``.
Independent coin flips with a "restore one if all dropped" rule would push the rate below ``p``; instead drops
are sampled independently with a calibrated probability ``q`` and redrawn when too few remain, where ``q``
solves E[dropped | enough kept] / M = p. When ``p`` cannot be reached (e.g. p = 0.7 with two modalities and
min_keep = 1: at most one of two can go), the rate is the highest achievable one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from ..types import Batch


@lru_cache(maxsize=256)
def calibrated_drop_probability(p: float, num_droppable: int, max_drops: int) -> float:
    """Independent per-modality drop probability q whose rate, conditioned on at most ``max_drops`` drops
    among ``num_droppable`` modalities, equals ``p`` (capped at the largest reachable rate)."""
    if p <= 0 or max_drops <= 0 or num_droppable <= 0:
        return 0.0
    if max_drops >= num_droppable:
        return min(p, 1.0)

    def conditional_rate(q: float) -> float:
        weights = [math.comb(num_droppable, k) * q**k * (1 - q) ** (num_droppable - k) for k in range(max_drops + 1)]
        total = sum(weights)
        return sum(k * w for k, w in enumerate(weights)) / (total * num_droppable) if total else 0.0

    if p >= max_drops / num_droppable:  # unreachable: drop as much as allowed
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(60):  # bisection: the conditional rate increases with q
        mid = (low + high) / 2
        low, high = (mid, high) if conditional_rate(mid) < p else (low, mid)
    return (low + high) / 2


class ModalityDropout:
    """Drop whole modalities per sample with probability ``p`` (training only), keeping at least ``min_keep``.

    p:          per-sample, per-modality drop probability in [0, 1)
    modalities: the modalities that may be dropped (None = every modality in the batch); the others are
                never dropped but count toward ``min_keep``
    min_keep:   a sample keeps at least this many of the modalities it has (or all it has, if fewer)
    seed:       the transform owns its generator, so drops are reproducible and independent of model init
    """

    def __init__(self, p: float, modalities: list[str] | None = None, min_keep: int = 1, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality dropout p must be in [0, 1), got {p!r}")
        if min_keep < 1:
            raise ValueError(f"modality dropout min_keep must be >= 1 (never drop every modality), got {min_keep}")
        self.p, self.min_keep, self.seed = float(p), int(min_keep), int(seed)
        self.modalities = None if modalities is None else list(modalities)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, batch: Batch, training: bool = True) -> Batch:
        if not training or self.p == 0.0 or len(batch) == 0:
            return batch
        names = [m for m in batch.present if self.modalities is None or m in self.modalities]
        unknown = [m for m in (self.modalities or []) if m not in batch.present]
        if unknown and not names:
            raise ValueError(f"modality dropout: {unknown} not in the batch (modalities: {list(batch.present)})")
        if not names:
            return batch
        present = {m: mask.to(torch.bool).cpu() for m, mask in batch.present.items()}
        droppable = torch.stack([present[m] for m in names], dim=1)  # [B, M] True where the sample has it
        fixed = sum((present[m].long() for m in present if m not in names), torch.zeros(len(batch), dtype=torch.long))
        drops = self.sample_drops(droppable, fixed)
        new_present = dict(batch.present)
        for column, name in enumerate(names):
            keep = (~drops[:, column]).to(batch.present[name].device)
            new_present[name] = batch.present[name] & keep
        return Batch(inputs=batch.inputs, present=new_present, labels=batch.labels, ids=batch.ids)

    def sample_drops(self, droppable: Tensor, fixed: Tensor) -> Tensor:
        """droppable [B, M] bool (sample has it), fixed [B] long (kept non-droppable count) → drops [B, M] bool."""
        available = droppable.sum(1)
        has = available + fixed
        # A sample may lose at most this many: keep min_keep (or everything it has when it has fewer).
        max_drops = torch.minimum(has - has.clamp(max=self.min_keep), available)
        drops = torch.zeros_like(droppable)
        for count, limit in {(int(a), int(m)) for a, m in zip(available.tolist(), max_drops.tolist())}:
            rows = ((available == count) & (max_drops == limit)).nonzero().flatten()
            q = calibrated_drop_probability(self.p, count, limit)
            if q == 0.0 or rows.numel() == 0:
                continue
            drops[rows] = self._sample_rows(droppable[rows], q, limit)
        return drops

    def _sample_rows(self, droppable: Tensor, q: float, limit: int) -> Tensor:
        """Independent Bernoulli(q) drops on available entries, redrawn for rows with more than ``limit``."""
        if q >= 1.0:  # p beyond reach: drop exactly `limit` of the available ones, chosen uniformly
            return self._random_subset(droppable, limit)
        drops = torch.zeros_like(droppable)
        pending = torch.ones(droppable.shape[0], dtype=torch.bool)
        for _ in range(100):
            rows = pending.nonzero().flatten()
            if rows.numel() == 0:
                return drops
            draw = (torch.rand(rows.numel(), droppable.shape[1], generator=self.generator) < q) & droppable[rows]
            drops[rows] = draw
            pending[rows] = draw.sum(1) > limit
        # Only reachable when q is very close to 1; fall back to a uniform subset for the leftovers.
        rows = pending.nonzero().flatten()
        drops[rows] = self._random_subset(droppable[rows], limit)
        return drops

    def _random_subset(self, droppable: Tensor, limit: int) -> Tensor:
        scores = torch.rand(droppable.shape, generator=self.generator).masked_fill(~droppable, -1.0)
        chosen = torch.zeros_like(droppable)
        chosen.scatter_(1, scores.topk(limit, dim=1).indices, True)
        return chosen & droppable

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"ModalityDropout(p={self.p}, modalities={self.modalities}, min_keep={self.min_keep}, seed={self.seed})"


__all__ = ["ModalityDropout", "calibrated_drop_probability"]
