"""Manifests (JSONL / CSV, one row per sample) → validated ``SampleRow`` lists.

Format: one column per modality (file paths for image / audio, relative to the manifest's directory or
absolute; strings for text), a label column (``label``; for multi-label a JSON list or ``"a|b"``) and an
optional id column (``id``; else the 1-based row number). An empty cell, ``null`` or a missing key means the
sample lacks that modality (``present=False``), not an error.

Validation happens up front, before any DataLoader: missing columns, unknown labels and unreadable files are
reported with the manifest, row, id and file. With ``on_error="skip"`` bad rows are dropped and reported
(a list of ``(where, reason)`` plus a warning) instead of raising.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModalityConfig
from .errors import DataError
from .processors import Processor

FILE_KINDS = ("image", "audio")


@dataclass
class SampleRow:
    """One sample before processing.

    inputs: modality name → raw input (resolved path, array, (array, rate) or string); None when absent.
    label:  str (multiclass / binary), list[str] (multilabel), or None when unlabelled.
    where:  "<manifest> row <n>" for error messages.
    """

    id: str
    inputs: dict[str, Any]
    label: str | list[str] | None = None
    where: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.where} (id {self.id!r})"


# ---------------------------------------------------------------------------------------------- reading


def read_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """Raw records and the column names found, from a .jsonl / .json-lines or .csv / .tsv file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {str(path)!r} does not exist")
    try:
        return _read_records(path)
    except UnicodeDecodeError as err:
        raise DataError(f"manifest {str(path)!r} is not UTF-8 text: {err}") from err
    except csv.Error as err:
        raise DataError(f"manifest {str(path)!r} is not valid CSV: {err}") from err


def _read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        # utf-8-sig: spreadsheet programs write a byte-order mark that would otherwise glue onto the first column.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns  # "id, image, label" headers: spaces after commas are not part of names
            records = [{k: v for k, v in r.items() if k is not None} for r in reader]
    elif suffix == ".json" and path.read_text(encoding="utf-8-sig").lstrip().startswith("["):
        try:  # a JSON array of objects instead of JSON lines
            records = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise DataError(f"manifest {str(path)!r} is not valid JSON: {err}") from err
        bad = next((i for i, r in enumerate(records, start=1) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(f"manifest {str(path)!r} item {bad}: expected a JSON object, got {records[bad - 1]!r}")
        columns = list(dict.fromkeys(k for r in records for k in r))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        records, columns = [], []
        with path.open(encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"manifest {str(path)!r} line {line_no} is not valid JSON: {err}") from err
                if not isinstance(record, dict):
                    raise DataError(f"manifest {str(path)!r} line {line_no}: expected a JSON object, got {record!r}")
                records.append(record)
                columns.extend(k for k in record if k not in columns)
    else:
        raise DataError(f"manifest {str(path)!r}: unsupported extension {suffix!r}; use .jsonl or .csv")
    if not records:
        raise DataError(f"manifest {str(path)!r} is empty: no rows")
    return records, columns


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_label(value: Any, task: str) -> str | list[str] | None:
    """A manifest cell → "label" or ["a", "b"] (multilabel: a list or an ``"a|b"`` string); None if empty."""
    if value is None or (isinstance(value, str) and not value.strip() and task != "multilabel"):
        return None
    if task == "multilabel":
        items = value if isinstance(value, (list, tuple)) else str(value).split("|")
        return [_label_str(v).strip() for v in items if str(v).strip()]
    if isinstance(value, (list, tuple)):
        raise DataError(f"expected one label for task {task!r}, got a list {value!r}")
    return _label_str(value).strip()


def _label_str(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def records_to_rows(
    records: list[dict[str, Any]],
    columns: list[str],
    modalities: Mapping[str, ModalityConfig],
    source: str,
    base_dir: Path | None = None,
    label_column: str = "label",
    id_column: str = "id",
    task: str = "multiclass",
    require_label: bool = True,
) -> list[SampleRow]:
    """Map raw records onto modality names. Missing columns raise DataError naming them and the columns found."""
    wanted = {name: mcfg.column or name for name, mcfg in modalities.items()}
    required = list(wanted.values()) + ([label_column] if require_label else [])
    missing = [c for c in required if c not in columns]
    if missing:
        owners = {col: name for name, col in wanted.items()}
        named = ", ".join(f"{c!r}" + (f" (modality {owners[c]!r})" if c in owners else " (labels)") for c in missing)
        raise DataError(f"{source}: missing column {named}; columns found: {', '.join(columns) or '(none)'}")
    rows = []
    for number, record in enumerate(records, start=1):
        where = f"{source} row {number}"
        inputs: dict[str, Any] = {}
        for name, column in wanted.items():
            value = record.get(column)
            if _is_empty(value):
                inputs[name] = None
            elif modalities[name].kind in FILE_KINDS and isinstance(value, str):
                path = Path(value).expanduser()
                inputs[name] = str(path if path.is_absolute() or base_dir is None else base_dir / path)
            else:
                inputs[name] = value
        try:
            label = parse_label(record.get(label_column), task) if label_column in record else None
        except DataError as err:
            raise DataError(f"{where}: {err}") from err
        row_id = record.get(id_column)
        rows.append(SampleRow(id=str(number) if _is_empty(row_id) else str(row_id), inputs=inputs, label=label, where=where))
    return rows


def read_manifest(
    path: str | os.PathLike,
    modalities: Mapping[str, ModalityConfig],
    label_column: str = "label",
    id_column: str = "id",
    task: str = "multiclass",
    require_label: bool = True,
    limit: int | None = None,
) -> list[SampleRow]:
    """Read a JSONL / CSV manifest into rows (paths resolved against its directory). Structure errors raise."""
    path = Path(path)
    records, columns = read_records(path)
    if limit is not None:
        records = records[:limit]
    return records_to_rows(
        records, columns, modalities, path.name, path.parent.resolve(), label_column, id_column, task, require_label
    )


# ---------------------------------------------------------------------------------------------- validation


def collect_labels(rows: list[SampleRow]) -> list[str]:
    """Sorted distinct labels of some rows (multilabel lists are flattened)."""
    found: set[str] = set()
    for row in rows:
        if isinstance(row.label, list):
            found.update(row.label)
        elif row.label is not None:
            found.add(row.label)
    return sorted(found)


def _row_problem(row: SampleRow, processors: Mapping[str, Processor], labels: list[str] | None, require_label: bool):
    """The first problem of one row as a message, or None."""
    if all(raw is None for raw in row.inputs.values()):
        return f"{row.describe()}: has none of the modalities {list(row.inputs)} (all cells empty)"
    if require_label and row.label is None:
        return f"{row.describe()}: has no label"
    if labels is not None and row.label is not None:
        given = row.label if isinstance(row.label, list) else [row.label]
        unknown = [lab for lab in given if lab not in labels]
        if unknown:
            shown = ", ".join(labels[:30]) + (" ..." if len(labels) > 30 else "")
            return f"{row.describe()}: label {unknown[0]!r} is not in the label set [{shown}]"
    for name, raw in row.inputs.items():
        if raw is None:
            continue
        try:
            processors[name].check(raw)
        except DataError as err:
            return f"{row.describe()}: {name}: {err}"
        except Exception as err:  # a processor bug or an unexpected decoder failure: still name the row
            return f"{row.describe()}: {name}: {type(err).__name__}: {err}"
    return None


def validate_rows(
    rows: list[SampleRow],
    processors: Mapping[str, Processor],
    labels: list[str] | None = None,
    on_error: str = "raise",
    require_label: bool = True,
    source: str = "manifest",
) -> tuple[list[SampleRow], list[tuple[str, str]]]:
    """Check every row (labels, presence, a cheap decode check of every file) before training starts.

    Returns (kept rows, problems as (where, reason)). With on_error="raise" the first problem raises DataError;
    with "skip" bad rows are dropped, a warning summarises them, and an all-bad split still raises.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    kept, problems = [], []
    for row in rows:
        problem = _row_problem(row, processors, labels, require_label)
        if problem is None:
            kept.append(row)
        elif on_error == "raise":
            raise DataError(problem)
        else:
            problems.append((row.describe(), problem))
    if problems:
        preview = "\n  ".join(reason for _, reason in problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        warnings.warn(f"{source}: skipped {len(problems)} of {len(rows)} rows:\n  {preview}{more}", stacklevel=2)
    if not kept:
        raise DataError(f"{source}: no usable rows left ({len(problems)} skipped); first problem: {problems[0][1]}")
    return kept, problems
