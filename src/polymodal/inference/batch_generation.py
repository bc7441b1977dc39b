"""Batch prediction with a generation model (captioning, vqa, transcription, chat) over a generation manifest:
``polymodal predict MODEL --data rows.jsonl --out predictions.jsonl`` (``batch.predict_manifest`` hands it here).

The manifest is the generation format (docs/DATA.md §4, JSON Lines): ``messages`` (a conversation; a final
assistant turn is the reference and is generated anew) or ``prompt``, and one field per attachment modality (a path
relative to the manifest's folder, or a list of them). ``answers`` and other fields are ignored. Each kept row
gets one JSON line, in manifest order: ``{"id": ..., "prediction": text, "modalities": [...]}``; rows are generated
in batches (left padding, KV cache) with the decoding options saved with the model.

A bad row (no conversation, a missing or unreadable file, placeholders that do not match its attachments, a
duplicate id) raises a DataError naming the manifest, row number and id (``on_error="raise"``), or is left out and
listed in one warning (``on_error="skip"``). ``out`` is written atomically: a failure leaves no partial file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..data.errors import DataError
from ..errors import PolymodalError
from ..files import atomic_text_writer
from ..generation.data import SampleBatch
from .batch import raise_if_nothing_written, warn_skipped_rows

# The field carrying a row's 1-based manifest line through the dataset (which copies unknown fields), so that an
# error found while processing or generating still names its row.
_ROW = "_manifest_row"


def _where(data: Path, sample: dict[str, Any]) -> str:
    return f"{data}: row {sample.get(_ROW, '?')} (id {sample.get('id')!r})"


def read_generation_rows(data: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines generation manifest; DataError naming the file (and line) otherwise."""
    from ..data.builtin.generation_format import read_jsonl

    if not data.is_file():
        raise DataError(f"manifest {str(data)!r} not found")
    if data.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"manifest {str(data)!r}: a generation model reads JSON Lines manifests (docs/DATA.md, "
                        "'Generation manifests'), one row per line with messages or prompt + image / audio paths")
    rows = read_jsonl(data)
    if not rows:
        raise DataError(f"manifest {str(data)!r} holds no rows")
    return rows


def predict_generation_manifest(predictor: Any, data: str | os.PathLike, out: str | os.PathLike, *,
                                on_error: str = "raise", batch_size: int = 32) -> dict[str, Any]:
    """Generate the next assistant turn of every row of ``data`` and write ``out`` (see module doc).

    Returns ``{"data", "out", "task", "rows", "written", "skipped": [{"where", "reason"}]}``. Raises DataError
    naming the row (``on_error="raise"``) or when no row is usable."""
    data, out = Path(data), Path(out)
    rows = read_generation_rows(data)
    numbered = [{**row, _ROW: k + 1} if isinstance(row, dict) else row for k, row in enumerate(rows)]
    dataset = predictor.generator.dataset(numbered, base_dir=data.parent.resolve(), source=str(data),
                                          on_error=on_error)  # checks every row (fields, files' headers)
    skipped = [{"where": _where_of(reason), "reason": reason} for reason in dataset.skipped]
    seen: dict[str, int] = {}
    keep: list[int] = []
    for index, row in enumerate(dataset.rows):
        if row["id"] in seen:  # ids key the predictions: two rows with one id cannot be told apart
            reason = (f"{_where(data, row)}: duplicate id {row['id']!r} (first at row {seen[row['id']]}); give each "
                      "row its own id")
            if on_error == "raise":
                raise DataError(reason)
            skipped.append({"where": _where(data, row), "reason": reason})
            continue
        seen[row["id"]] = row.get(_ROW, index + 1)
        keep.append(index)
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_text_writer(out) as handle:
        for start in range(0, len(keep), batch_size):
            chunk = keep[start:start + batch_size]
            for sample, prediction in _generate_chunk(predictor, dataset, chunk, data, on_error, skipped):
                handle.write(json.dumps({"id": sample["id"], **prediction.to_dict()}, ensure_ascii=False) + "\n")
                written += 1
        raise_if_nothing_written(data, written, skipped)  # inside: the old file stays when nothing was written
    warn_skipped_rows(data, skipped, len(rows))
    return {"data": str(data), "out": str(out), "task": predictor.task_name, "rows": len(rows), "written": written,
            "skipped": skipped}


def _where_of(reason: str) -> str:
    """The "<manifest>: row N (id X)" prefix of a GenerationDataset message."""
    head, sep, _ = reason.partition(")")
    return head + sep if sep else reason


def _generate_chunk(predictor: Any, dataset: Any, indices: list[int], data: Path, on_error: str,
                    skipped: list[dict[str, str]]) -> list[tuple[dict[str, Any], Any]]:
    """(sample, GeneratedText) for the rows ``indices`` of ``dataset``: processed, then generated in one batch; when
    the batch fails, one by one, so that the error names its row (raised, or skipped with ``on_error="skip"``)."""
    samples: list[dict[str, Any]] = []
    for index in indices:
        try:
            samples.append(dataset[index])
        except (PolymodalError, ValueError, OSError) as err:  # data that passed the header checks but not decoding
            _fail(_where(data, dataset.rows[index]), err, on_error, skipped)
    if not samples:
        return []
    try:
        return list(zip(samples, predictor.predict_processed(SampleBatch(samples))))
    except (PolymodalError, ValueError) as err:
        if len(samples) == 1:
            _fail(_where(data, samples[0]), err, on_error, skipped)
            return []
    results = []
    for sample in samples:
        try:
            results += list(zip([sample], predictor.predict_processed(SampleBatch([sample]))))
        except (PolymodalError, ValueError) as err:
            _fail(_where(data, sample), err, on_error, skipped)
    return results


def _fail(where: str, err: Exception, on_error: str, skipped: list[dict[str, str]]) -> None:
    message = str(err)
    reason = message if message.startswith(where.split(": row")[0] + ": row") else f"{where}: {message}"
    if on_error == "raise":
        raise DataError(reason) from err
    skipped.append({"where": where, "reason": reason})


__all__ = ["predict_generation_manifest", "read_generation_rows"]
