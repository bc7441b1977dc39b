"""Manifest rows of the generation tasks → samples for :class:`~.collate.GenerationCollator`.

A row (docs/DATA.md, "Generation manifests"; ``data.builtin.generation_format``) holds ``messages`` (or
``prompt`` + ``answer``), ``answers`` (every acceptable reference of the last turn), and one field per attachment
modality (``image`` / ``audio`` or the modality's ``column``): a path relative to the manifest's folder, an array,
or a list of those (several attachments, in the order of their placeholders). :class:`GenerationDataset` runs the
processors; its ``collate`` returns a :class:`SampleBatch` (the processed samples, not yet tokenised: the
tokenizer belongs to the model, which is built after the data), which the task turns into a GenerationBatch with
the model's collator (``Task.prepare_batch``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.errors import DataError
from .chat import sample_messages


@dataclass
class SampleBatch:
    """Processed samples of one batch (``messages`` / ``prompt``, ``attachments`` {modality: [inputs]}, ``answers``,
    ``id``, extra row fields), before tokenisation. ``to(device)`` moves the attachment tensors."""

    samples: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: torch.device | str) -> SampleBatch:
        moved = []
        for sample in self.samples:
            attachments = {m: [{k: v.to(device) for k, v in item.items()} for item in items]
                           for m, items in (sample.get("attachments") or {}).items()}
            moved.append({**sample, "attachments": attachments})
        return SampleBatch(moved)


def reference_answers(row: Mapping[str, Any], where: str) -> list[str]:
    """The references of a row's last turn: ``answers``, else the last assistant message / ``answer``.
    Raises DataError naming ``where`` when there is none or they are not strings."""
    answers = row.get("answers")
    if answers is None:
        messages = sample_messages(dict(row), where)
        last = messages[-1]
        if last["role"] != "assistant" or not isinstance(last["content"], str):
            return []
        answers = [last["content"]]
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: 'answers' must be a list of strings, got {answers!r}")
    return list(answers)


def _resolve(raw: Any, base_dir: Path | None) -> Any:
    if isinstance(raw, (str, os.PathLike)) and base_dir is not None and not Path(raw).is_absolute():
        return str(base_dir / raw)
    return raw


class GenerationDataset(Dataset):
    """Rows → processed samples. ``columns``: modality → row field (default the modality name); ``base_dir``:
    the folder relative paths are read from (the manifest's). Rows are checked when built (messages, answers,
    attachment fields, each attachment's processor ``check``): a bad row raises DataError naming ``source`` and
    the row, or is skipped with ``on_error="skip"`` (kept in ``skipped``)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], processors: Mapping[str, Any], *,
                 columns: Mapping[str, str] | None = None, base_dir: str | Path | None = None,
                 source: str = "manifest", on_error: str = "raise"):
        self.processors = dict(processors)
        self.columns = {name: (columns or {}).get(name) or name for name in self.processors}
        self.base_dir = None if base_dir is None else Path(base_dir)
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        for index, row in enumerate(rows):
            where = f"{source}: row {index + 1} (id {row.get('id', index)!r})" if isinstance(row, Mapping) else \
                f"{source}: row {index + 1}"
            try:
                self.rows.append(self._checked(row, index, where))
            except DataError as err:
                if on_error != "skip":
                    raise
                self.skipped.append(str(err))
        if not self.rows:
            raise DataError(f"{source}: no usable rows" + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))

    def _checked(self, row: Any, index: int, where: str) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        sample_messages(dict(row), where)  # raises on a malformed conversation
        checked = {**row, "id": str(row.get("id", index)), "answers": reference_answers(row, where)}
        attachments: dict[str, list[Any]] = {}
        for name, column in self.columns.items():
            value = row.get(column)
            if value is None:
                continue
            items = list(value) if isinstance(value, list) else [value]
            for k, raw in enumerate(items):
                raw = _resolve(raw, self.base_dir)
                try:
                    self.processors[name].check(raw)
                except DataError as err:
                    raise DataError(f"{where}: {column}[{k}]: {err}") from None
                items[k] = raw
            attachments[name] = items
        checked["_raw_attachments"] = attachments
        return checked

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        sample = {key: value for key, value in row.items() if key != "_raw_attachments" and key not in self.columns.values()}
        sample["attachments"] = {name: [self.processors[name](raw) for raw in items]
                                 for name, items in row["_raw_attachments"].items()}
        return sample

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> SampleBatch:
        return SampleBatch(list(samples))


def attachment_inputs(processors: Mapping[str, Any], attachments: Mapping[str, Any]) -> dict[str, list[dict[str, Tensor]]]:
    """Raw attachments {modality: raw or [raw, ...]} (paths, arrays, (wave, rate)) → processed inputs, for
    generation from user inputs. Raises DataError for a modality the model has no processor for."""
    out: dict[str, list[dict[str, Tensor]]] = {}
    for name, value in attachments.items():
        if name not in processors:
            raise DataError(f"attachment {name!r}: the model reads {sorted(processors)} attachments only")
        items = list(value) if isinstance(value, list) else [value]
        for raw in items:
            processors[name].check(raw)
        out[name] = [processors[name](raw) for raw in items]
    return out
