"""Seeding, determinism and a data order that can be replayed from (seed, epoch) — the basis of exact resume.

Why a custom sampler: torch's RandomSampler draws its permutation from a generator whose state moves on every
epoch, so a run resumed mid-epoch cannot recover the order. ``EpochShuffleSampler`` derives each epoch's
permutation from (seed, epoch) alone and can start part-way through it.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device) with one number."""
    os.environ["PYTHONHASHSEED"] = str(seed)  # affects subprocesses (DataLoader workers started by spawn)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """Ask torch for deterministic kernels where they exist (warn, don't fail, where they don't)."""
    if not enabled:
        return
    # cuBLAS needs this workspace setting for deterministic matmuls; it must be set before the first CUDA call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python / numpy in each worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that differs for every (seed, epoch) pair (golden-ratio mixing, no collisions nearby)."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + 1) % (2**63)


class EpochShuffleSampler(Sampler[int]):
    """Indices 0..n-1 in an order fixed by (seed, epoch), optionally starting at position ``start``.

    ``set_epoch(e, start=k)`` must be called before each epoch (the Trainer does it). ``shuffle=False`` gives
    the plain order, still with ``start`` support.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples, self.seed, self.shuffle = int(num_samples), int(seed), shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} is outside the epoch of {self.num_samples} samples")
        self.epoch, self.start = int(epoch), int(start)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self):
        return iter(self.order(self.epoch)[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def make_resumable_loader(loader: DataLoader, seed: int) -> tuple[DataLoader, EpochShuffleSampler | None]:
    """Rebuild a standard ``DataLoader(batch_size=..., shuffle=...)`` around an EpochShuffleSampler.

    The rebuilt loader gets its own generator, so creating an iterator never draws from the global torch RNG
    (which would shift dropout masks after a resume). Loaders with a custom batch_sampler or sampler are kept
    as they are and returned with ``None``: the Trainer then skips consumed batches by iterating, and exact
    mid-epoch resume holds only if that sampler is deterministic per epoch.
    """
    sampler = loader.sampler
    if isinstance(sampler, EpochShuffleSampler):
        if loader.generator is None:
            loader.generator = torch.Generator()
        return loader, sampler
    plain_random = isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None
    if loader.batch_size is None or not (plain_random or isinstance(sampler, SequentialSampler)):
        warnings.warn(
            f"train loader uses {type(loader.batch_sampler or sampler).__name__}: resuming mid-epoch replays it "
            "by skipping batches and is exact only if its order is fixed per epoch (set_epoch)",
            stacklevel=3,
        )
        if loader.generator is None:
            loader.generator = torch.Generator()
        return loader, None
    new_sampler = EpochShuffleSampler(len(loader.dataset), seed=seed, shuffle=plain_random)
    return with_sampler(loader, new_sampler), new_sampler


def python_numpy_rng_state() -> dict:
    """JSON-ready python and numpy global RNG states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def restore_python_numpy_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def with_sampler(loader: DataLoader, sampler: Any) -> DataLoader:
    """A copy of ``loader`` (same dataset, batch size, workers, collate, ...) that draws its order from ``sampler``."""
    options = dict(
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=torch.Generator(),
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **options)
