"""Manifests (JSONL / CSV, one row per sample) → validated ``SampleRow`` lists.

Format: one column per modality (file paths for image / audio, relative to the manifest's directory or
absolute; strings for text), a label column (``label``; for multi-label a JSON list or ``"a|b"``) and an
optional id column (``id``; else the 1-based row number). An empty cell, ``null`` or a missing key means the
sample lacks that modality (``present=False``), not an error.

Validation happens up front, before any DataLoader: missing columns, unknown labels, unreadable files and
duplicate ids are reported with the manifest, row, id and file. With ``on_error="skip"`` bad rows are dropped
and reported (a list of ``(where, reason)`` plus a warning) instead of raising; of two rows sharing an id the
later one is dropped.

Labels: one rule (:func:`normalize_label`) for every reader (JSONL, JSON, CSV/TSV, built-in sets,
``model.head.labels``, multi-label lists and ``"a|b"`` strings) turns a raw cell into a canonical string:

- strings lose surrounding whitespace; booleans become ``"true"`` / ``"false"``;
- integers, integral floats (JSON ``2.0``, what pandas writes for an integer column with gaps) and strings
  that spell them (CSV ``"2.0"``, ``"2."``, ``"+2"``, ``"02"`` is NOT changed: leading zeros are kept as text
  because they often are codes) become the integer's decimal string ``"2"``;
- other floats keep their shortest repr (``0.5`` → ``"0.5"``); NaN is a missing label (pandas writes NaN for
  an empty cell), inf is refused (a DataError naming the row).

Two different raw cells that end up as the same class (``2.0`` and ``"2"``) are reported in a warning naming
both and their rows. Label sets are ordered by :func:`sort_labels`: by integer value when every label is an
integer string (``"2"`` before ``"10"``), else by plain string order.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
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


# An integral number spelled as text: "2", "-3", "+2", "2.0", "2.00", "2." (but not "02": see normalize_label).
_INTEGRAL_TEXT = re.compile(r"[+-]?(0|[1-9][0-9]*)(\.0*)?")
_INTEGER_LABEL = re.compile(r"-?(0|[1-9][0-9]*)")


def normalize_label(value: Any) -> str:
    """One raw label (JSON value or CSV cell) → its canonical string (the rule in this module's docstring).

    Raises DataError for NaN / inf and for values that are not str / int / float / bool.
    """
    if isinstance(value, bool):  # before int: bool is an int subclass
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"label {value!r} is not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGRAL_TEXT.fullmatch(text):
            return str(int(float(text)))  # "2.0" → "2", "+2" → "2", "-0" → "0"
        return text
    raise DataError(f"label {value!r} is a {type(value).__name__}; expected a string or a number")


def parse_label(value: Any, task: str) -> str | list[str] | None:
    """A manifest cell → "label" or ["a", "b"] (multilabel: a list or an ``"a|b"`` string); None if empty.

    Every item goes through :func:`normalize_label`. Raises DataError for a list in a single-label task.
    """
    if value is None or (isinstance(value, str) and not value.strip() and task != "multilabel"):
        return None
    if isinstance(value, float) and math.isnan(value):  # pandas' missing value
        return None
    if task == "multilabel":
        items = value if isinstance(value, (list, tuple)) else str(value).split("|")
        return [normalize_label(v) for v in items if v is not None and str(v).strip()]
    if isinstance(value, (list, tuple)):
        raise DataError(f"expected one label for task {task!r}, got a list {value!r}")
    return normalize_label(value)


def sort_labels(labels: Any) -> list[str]:
    """Distinct labels in their documented order: integer value when every label is an integer string
    ("0", "1", "2", ..., "10"), else plain string order (stable for mixed or non-numeric sets)."""
    unique = set(labels)
    if unique and all(_INTEGER_LABEL.fullmatch(label) for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def normalize_labels(labels: Any, where: str = "model.head.labels") -> list[str]:
    """A configured label list → canonical strings in the given order; DataError when two entries collide
    (e.g. ``[2, "2.0"]``) or repeat, naming them."""
    out: list[str] = []
    first: dict[str, Any] = {}
    for raw in labels:
        try:
            label = normalize_label(raw)
        except DataError as err:
            raise DataError(f"{where}: {err}") from err
        if label in first:
            raise DataError(f"{where}: {first[label]!r} and {raw!r} are the same label {label!r}; list each class once")
        first[label] = raw
        out.append(label)
    return out


def _warn_label_collisions(records: list[dict[str, Any]], label_column: str, source: str) -> None:
    """Warn when different raw cells (2.0 and "2", " cat" and "cat") were read as one class."""
    seen: dict[str, dict[str, int]] = {}  # canonical → {raw repr: first row}
    for number, record in enumerate(records, start=1):
        value = record.get(label_column)
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is None or isinstance(item, (dict, list)):
                continue
            try:
                label = normalize_label(item)
            except DataError:
                continue
            seen.setdefault(label, {}).setdefault(repr(item), number)
    clashes = {label: raws for label, raws in seen.items() if len(raws) > 1}
    if clashes:
        shown = "; ".join(
            " and ".join(f"{raw} (row {row})" for raw, row in list(raws.items())[:3]) + f" are read as label {label!r}"
            for label, raws in list(clashes.items())[:5]
        )
        warnings.warn(f"{source}: different label cells name the same class: {shown} "
                      "(integral numbers are read as integers, whitespace is stripped)", stacklevel=3)


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
        rows.append(SampleRow(id=str(number) if _is_empty(row_id) else _id_str(row_id), inputs=inputs, label=label,
                              where=where))
    _warn_label_collisions(records, label_column, source)
    return rows


def _id_str(value: Any) -> str:
    # JSON 7 and 7.0 (pandas) are one id, like labels; strings are kept as written apart from whitespace.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


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
    """Distinct labels of some rows (multilabel lists are flattened) in :func:`sort_labels` order."""
    found: set[str] = set()
    for row in rows:
        if isinstance(row.label, list):
            found.update(row.label)
        elif row.label is not None:
            found.add(row.label)
    return sort_labels(found)


def duplicate_id_problems(rows: list[SampleRow]) -> dict[int, str]:
    """{index of a later row: message} for every row whose id an earlier row already has (ids are keys of
    predictions, comparisons and caches, so they must be unique within a split)."""
    first: dict[str, SampleRow] = {}
    problems: dict[int, str] = {}
    for index, row in enumerate(rows):
        earlier = first.setdefault(row.id, row)
        if earlier is not row:
            problems[index] = (f"{row.where}: duplicate id {row.id!r}, already used by {earlier.where}; "
                               "give every row a unique id (or drop the repeated row)")
    return problems


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
    """Check every row (unique ids, labels, presence, a cheap decode check of every file) before training starts.

    Returns (kept rows, problems as (where, reason)). With on_error="raise" the first problem raises DataError;
    with "skip" bad rows are dropped, a warning summarises them, and an all-bad split still raises.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    kept, problems = [], []
    duplicates = duplicate_id_problems(rows)
    for index, row in enumerate(rows):
        problem = duplicates.get(index) or _row_problem(row, processors, labels, require_label)
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
