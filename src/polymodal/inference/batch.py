"""Batch prediction over an unlabelled manifest: ``polymodal predict MODEL --data rows.jsonl --out predictions.jsonl``.

    summary = predict_manifest(Predictor("runs/x"), "rows.csv", "predictions.jsonl", on_error="skip")

The manifest is the training format (JSONL, JSON array or CSV / TSV; ``data.manifest``): one column per modality
(its name, its ``column`` option, or its kind when the model has one modality of that kind), file paths relative to
the manifest, empty cells = absent modality, an optional ``id`` column. Labels are not needed and are ignored when
present. Every row gets one JSON line in ``out``, in manifest order: ``{"id": ..., **prediction.to_dict()}``, i.e.
the model's task's prediction (classification: label, probabilities, modalities; alignment: the zero-shot label
and probabilities, or with ``embed`` the unit-norm embedding of each given input). A generation model reads a
generation manifest instead and writes the generated text (:mod:`.batch_generation`).

A bad row (missing file, unreadable image, over a size cap, duplicate id, no usable cell, an input the task cannot
answer) raises an error naming the file, row, id and field (``on_error="raise"``), or is left out with one warning
listing the skipped rows (``on_error="skip"``). ``out`` is written atomically (a temp file renamed into place): a
failure never leaves a partial predictions file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..data.errors import DataError
from ..data.manifest import SampleRow, duplicate_id_problems, read_records, records_to_rows
from ..errors import PolymodalError
from ..files import atomic_text_writer
from ..tasks.predictions import PredictionError
from .predictor import Predictor, ProcessedSample

ON_ERROR = ("raise", "skip")
# records_to_rows reads a label when its column exists; prediction ignores labels, so point it at a column no
# manifest has (a NUL character cannot appear in a CSV header or a JSON key written by hand).
_NO_LABEL_COLUMN = "\0ignored-label"


def manifest_rows(predictor: Predictor, path: str | os.PathLike, id_column: str = "id") -> list[SampleRow]:
    """The rows of manifest ``path`` mapped onto the model's modalities (paths resolved against its folder).

    A modality's column is its name or its ``column`` option, else its kind when the model has exactly one modality
    of that kind; a modality without a column is absent in every row. Raises DataError for an unreadable manifest
    or one with no column of any of the model's modalities (naming the columns expected and found)."""
    path = Path(path)
    records, columns = read_records(path)
    modalities = predictor.model.config.modalities
    kinds = [cfg.kind for cfg in modalities.values()]
    wanted = {}
    for name, cfg in modalities.items():
        column = cfg.column or name
        if column not in columns and kinds.count(cfg.kind) == 1 and cfg.kind in columns:
            column = cfg.kind  # the kind alias --image / --audio / --text also has in a single prediction
        if column in columns:
            wanted[name] = dataclasses.replace(cfg, column=column)
    if not wanted:
        expected = ", ".join(repr(cfg.column or name) for name, cfg in modalities.items())
        raise DataError(f"manifest {str(path)!r}: no column holds one of the model's modalities (expected {expected}); "
                        f"columns found: {', '.join(columns) or '(none)'}")
    return records_to_rows(records, columns, wanted, str(path), path.parent.resolve(), label_column=_NO_LABEL_COLUMN,
                           id_column=id_column, require_label=False)


def process_row(predictor: Predictor, row: SampleRow, embed: bool = False) -> ProcessedSample:
    """One manifest row through the task's checks and the model's processors. Raises DataError (bad or missing
    input, no usable cell) or PredictionError (an input the task cannot answer), the message starting with the
    row: ``rows.jsonl row 3 (id 'a7'): photo: ...``."""
    sample = {name: raw for name, raw in row.inputs.items() if raw is not None}
    if not sample:
        raise DataError(f"{row.describe()}: has none of the modalities {list(row.inputs)} (all cells empty)")
    try:
        predictor.check(sample, embed=embed)
        return predictor.process(sample)
    except PredictionError as err:
        raise PredictionError(f"{row.describe()}: {err}") from err
    except (PolymodalError, ValueError) as err:  # DataError naming the modality, the Predictor's ValueErrors
        raise DataError(f"{row.describe()}: {err}") from err


def predict_manifest(predictor: Predictor, data: str | os.PathLike, out: str | os.PathLike, *,
                     on_error: str = "raise", batch_size: int = 32, embed: bool = False,
                     id_column: str = "id") -> dict[str, Any]:
    """Predict every row of manifest ``data`` and write ``out`` (JSON lines, one per kept row, manifest order).

    ``on_error``: "raise" (the first bad row raises, nothing is written) or "skip" (bad rows are left out, one
    warning lists them). ``batch_size``: rows per forward pass. ``embed``: embeddings instead of labels (models
    with a shared embedding space). Returns ``{"data", "out", "task", "rows", "written", "skipped": [{"where",
    "reason"}]}``. Raises DataError / PredictionError naming the row and field, DataError when no row is usable,
    NonFiniteModelError for NaN / inf outputs, ValueError for a bad ``on_error`` / ``batch_size`` or an ``out`` that
    is the manifest itself.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data, out = Path(data), Path(out)
    if out.exists() and data.exists() and out.resolve() == data.resolve():
        raise ValueError(f"--out {out} is the manifest itself; write the predictions to another file")
    if embed and not predictor.can_embed:
        predictor.check({}, embed=True)  # raises: the model has no embedding space (says what to use instead)
    if getattr(predictor, "generates", False):  # rows are conversations + attachments: the generation manifest
        from .batch_generation import predict_generation_manifest

        return predict_generation_manifest(predictor, data, out, on_error=on_error, batch_size=batch_size)
    rows = manifest_rows(predictor, data, id_column)
    duplicates = duplicate_id_problems(rows)
    skipped: list[dict[str, str]] = []
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_text_writer(out) as handle:
        pending: list[tuple[SampleRow, ProcessedSample]] = []
        for index, row in enumerate(rows):
            try:
                if index in duplicates:  # ids key the predictions: two rows with one id cannot be told apart
                    raise DataError(duplicates[index])
                pending.append((row, process_row(predictor, row, embed)))
            except (DataError, PredictionError) as err:
                if on_error == "raise":
                    raise
                skipped.append({"where": row.describe(), "reason": str(err)})
                continue
            if len(pending) == batch_size:
                written += _write_batch(handle, predictor, pending, embed)
                pending = []
        written += _write_batch(handle, predictor, pending, embed)
        raise_if_nothing_written(data, written, skipped)  # inside: the old file stays when nothing was written
    warn_skipped_rows(data, skipped, len(rows))
    return {"data": str(data), "out": str(out), "task": predictor.task_name, "rows": len(rows), "written": written,
            "skipped": skipped}


def _write_batch(handle: Any, predictor: Predictor, pending: list[tuple[SampleRow, ProcessedSample]],
                 embed: bool) -> int:
    if not pending:
        return 0
    batch = predictor.collate([processed for _, processed in pending], ids=[row.id for row, _ in pending])
    predictions = predictor.predict_processed(batch, embed=embed)
    for (row, _), prediction in zip(pending, predictions):
        handle.write(json.dumps({"id": row.id, **prediction.to_dict()}, allow_nan=False) + "\n")
    return len(pending)


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a predictions file written by :func:`predict_manifest` (JSON lines)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def raise_if_nothing_written(data: Any, written: int, skipped: list[dict[str, str]]) -> None:
    """DataError when a manifest left no row to write (every row skipped), naming the first problem."""
    if written == 0:
        raise DataError(f"manifest {str(data)!r}: no usable rows left ({len(skipped)} skipped); first problem: "
                        f"{skipped[0]['reason'] if skipped else '(none)'}")


def warn_skipped_rows(data: Any, skipped: list[dict[str, str]], total: int) -> None:
    """One warning listing the first five rows ``--on-error skip`` left out (and how many more)."""
    if skipped:
        preview = "\n  ".join(item["reason"] for item in skipped[:5])
        more = f"\n  ... and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"manifest {str(data)!r}: skipped {len(skipped)} of {total} rows (--on-error skip)\n  "
                      f"{preview}{more}", stacklevel=3)


__all__ = ["manifest_rows", "predict_manifest", "process_row", "raise_if_nothing_written", "read_predictions",
           "warn_skipped_rows"]
