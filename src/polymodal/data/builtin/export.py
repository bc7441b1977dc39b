"""Write a built-in data set as files + manifests: the simplest way to see the manifest format."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from ...registry import DATASETS

MANIFEST_COLUMNS = ("id", "image", "audio", "text", "label")


def export_dataset(
    name: str,
    out_dir: str | Path,
    splits: Sequence[str] = ("train", "val", "test"),
    limit: int | None = None,
) -> dict[str, Path]:
    """Write ``images/*.png``, ``audio/*.wav`` and ``<split>.jsonl`` + ``<split>.csv`` under ``out_dir``.

    Paths in the manifests are relative to ``out_dir``, so the folder can be moved. Returns split → JSONL path.
    ``limit`` keeps N rows of each split, evenly spaced (the same rows as ``data.limit`` picks for the built-in
    set, so an exported subset still holds every class and loads to the same tensors).
    """
    from ..dataset import spread_subset  # local: dataset imports builtin for data.name configs

    dataset = DATASETS.get(name)()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    manifests = {}
    for split in splits:
        records = dataset.records(split)
        records = records if limit is None else spread_subset(records, limit)
        rows = []
        for record in records:
            image_path = f"images/{record['id'].split('-', 1)[0]}.png"
            audio_name = record["id"].split("-", 1)[1]
            audio_path = f"audio/{audio_name}.wav"
            if not (out / image_path).exists():
                Image.fromarray(np.asarray(record["image"], dtype=np.uint8)).save(out / image_path)
            if not (out / audio_path).exists():
                wave, rate = record["audio"]
                sf.write(out / audio_path, wave, rate, subtype="PCM_16")
            rows.append(
                {"id": record["id"], "image": image_path, "audio": audio_path, "text": record["text"], "label": record["label"]}
            )
        jsonl = out / f"{split}.jsonl"
        jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
        with (out / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        manifests[split] = jsonl
    return manifests
