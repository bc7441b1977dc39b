"""MultimodalDataset (rows → processed tensors) and ``build_dataloaders`` (config → DataLoaders).

A sample is ``{"id", "inputs": {name: {tensor_name: Tensor}}, "present": {name: bool}, "label": Tensor}``;
``MultimodalDataset.collate`` turns a list of them into a ``polymodal.types.Batch``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from ..types import Batch
from .errors import DataError
from .manifest import SampleRow, collect_labels, normalize_labels, read_manifest, validate_rows
from .processors import Processor

TASKS = ("multiclass", "binary", "multilabel")


def _describe_raw(raw: Any) -> str:
    if isinstance(raw, str):
        return repr(raw if len(raw) < 200 else raw[:200] + "...")
    if isinstance(raw, tuple):
        return f"({type(raw[0]).__name__} of shape {getattr(raw[0], 'shape', '?')}, {raw[1]})"
    return f"{type(raw).__name__} of shape {getattr(raw, 'shape', '?')}"


def encode_label(label: str | list[str] | None, label_to_index: Mapping[str, int], task: str) -> torch.Tensor | None:
    """multiclass → long []; binary → float [] (1.0 for the last label); multilabel → float [C] multi-hot."""
    if label is None:
        return None
    if task == "multiclass":
        return torch.tensor(label_to_index[label], dtype=torch.long)
    if task == "binary":
        return torch.tensor(float(label_to_index[label] == len(label_to_index) - 1))
    target = torch.zeros(len(label_to_index))
    for item in label:
        target[label_to_index[item]] = 1.0
    return target


class MultimodalDataset(Dataset):
    """Rows + one processor per modality → samples. Absent modalities get ``processor.empty()``.

    Without augmentation every processed sample is cached in memory after its first use (decoding and
    log-mel of real audio is the main CPU cost of an epoch). With ``num_workers > 0`` each worker holds its own
    cache, so use ``persistent_workers`` (``build_dataloaders`` does).
    """

    def __init__(
        self,
        rows: Sequence[SampleRow],
        processors: Mapping[str, Processor],
        label_to_index: Mapping[str, int] | None = None,
        task: str = "multiclass",
        augment: bool = False,
        cache: bool | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self.rows = list(rows)
        self.processors = dict(processors)
        self.label_to_index = dict(label_to_index or {})
        self.task = task
        self.augment = augment
        self.cache_enabled = (not augment) if cache is None else cache
        self._cache: dict[int, dict[str, Any]] = {}
        self.skipped: list[tuple[str, str]] = []  # filled by build_dataloaders with on_error="skip"
        for row in self.rows[:1]:
            unknown = [name for name in row.inputs if name not in self.processors]
            if unknown:
                raise DataError(f"rows have modalities {unknown} with no processor; processors: {list(processors)}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        sample = self._process(self.rows[index])
        if self.cache_enabled:
            self._cache[index] = sample
        return sample

    def _process(self, row: SampleRow) -> dict[str, Any]:
        inputs, present = {}, {}
        for name, processor in self.processors.items():
            raw = row.inputs.get(name)
            if raw is None:
                inputs[name], present[name] = processor.empty(), False
                continue
            try:
                inputs[name] = processor(raw, augment=self.augment)
            except Exception as err:
                # Inside a DataLoader worker the traceback is re-raised in the main process: keep the row + file.
                raise DataError(f"{row.describe()}: cannot process {name} input {_describe_raw(raw)}: {err}") from err
            present[name] = True
        label = None
        if self.label_to_index and row.label is not None:
            try:
                label = encode_label(row.label, self.label_to_index, self.task)
            except KeyError as err:
                raise DataError(f"{row.describe()}: label {err.args[0]!r} is not in the label set") from err
        return {"id": row.id, "inputs": inputs, "present": present, "label": label}

    def collate(self, samples: list[dict[str, Any]]) -> Batch:
        """Samples → Batch(inputs {name: {key: [B, ...]}}, present {name: [B] bool}, labels, ids)."""
        inputs = {
            name: processor.collate([s["inputs"][name] for s in samples]) for name, processor in self.processors.items()
        }
        present = {name: torch.tensor([s["present"][name] for s in samples]) for name in self.processors}
        labels = None
        if all(s["label"] is not None for s in samples):
            labels = torch.stack([s["label"] for s in samples])
        return Batch(inputs=inputs, present=present, labels=labels, ids=[s["id"] for s in samples])


# ---------------------------------------------------------------------------------------------- loaders


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker (base_seed + id); derive numpy / random from it so augmentation is reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def spread_subset(rows: list[SampleRow], limit: int) -> list[SampleRow]:
    """``limit`` rows evenly spaced over the split: built-in splits are ordered (by label, speaker), so the
    first N rows would hold only a few classes."""
    if limit >= len(rows):
        return rows
    return [rows[(i * len(rows)) // limit] for i in range(limit)]


def load_split_rows(config: Config, split: str) -> list[SampleRow] | None:
    """Unvalidated rows of one split from config.data (built-in data set or manifest); None if not configured."""
    data, modalities = config.data, config.model.modalities
    if data.name:
        from .builtin import load_builtin_rows

        rows = load_builtin_rows(data.name, split, modalities)
        if rows is None or data.limit is None:
            return rows
        return spread_subset(rows, data.limit)
    path = getattr(data, split, None)
    if not path:
        return None
    return read_manifest(path, modalities, data.label_column, data.id_column, config.model.head.task, limit=data.limit)


def build_dataloaders(
    config: Config,
    processors: Mapping[str, Processor],
    splits: Sequence[str] = ("train", "val", "test"),
    augment_train: bool | None = None,
) -> tuple[dict[str, DataLoader], list[str]]:
    """DataLoaders for the configured splits and the label list.

    Rows come from ``config.data.name`` (a built-in data set) or the manifests ``config.data.<split>``; splits
    that are not configured are left out. Labels: ``config.model.head.labels`` if given (normalised by
    ``manifest.normalize_labels``: ``[0, 1, 2.0]`` → ``["0", "1", "2"]``, collisions are a DataError), else the
    labels of the train split in ``manifest.sort_labels`` order (integers by value). Every row is validated before any loader exists (``config.data.on_error``).
    ``augment_train`` (default: ``config.data.augment`` if that key exists, else False) turns on the
    processors' augmentation for the train split (and disables its cache).
    """
    task = config.model.head.task
    rows_by_split = {split: load_split_rows(config, split) for split in splits}
    rows_by_split = {split: rows for split, rows in rows_by_split.items() if rows is not None}
    if not rows_by_split:
        source = f"data set {config.data.name!r}" if config.data.name else "config.data"
        raise DataError(f"{source} provides none of the splits {list(splits)} (set data.train / data.val / data.test)")
    labels = normalize_labels(config.model.head.labels)
    if not labels and config.data.name:
        from .builtin import get_dataset

        labels = list(get_dataset(config.data.name).labels)
    if not labels:
        reference = rows_by_split.get("train") or [r for rows in rows_by_split.values() for r in rows]
        labels = collect_labels(reference)
        if not labels:
            raise DataError("no labels found in the train split and model.head.labels is empty")
    if task == "binary" and len(labels) not in (1, 2):
        raise DataError(f"a binary task needs 1 or 2 labels (negative, positive), found {labels}")
    label_to_index = {label: i for i, label in enumerate(labels)}
    if augment_train is None:
        augment_train = bool(getattr(config.data, "augment", False))

    loaders = {}
    generator = torch.Generator().manual_seed(config.train.seed)
    for split, rows in rows_by_split.items():
        kept, problems = validate_rows(rows, processors, labels, config.data.on_error, source=f"{split} split")
        is_train = split == "train"
        dataset = MultimodalDataset(kept, processors, label_to_index, task, augment=is_train and augment_train)
        dataset.skipped = problems
        workers = config.data.num_workers
        loaders[split] = DataLoader(
            dataset,
            batch_size=config.data.batch_size if is_train else config.data.eval_batch_size,
            shuffle=is_train,
            generator=generator if is_train else None,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker if workers > 0 else None,
            collate_fn=dataset.collate,
        )
    return loaders, labels
