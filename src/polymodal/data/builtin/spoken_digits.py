"""The built-in "spoken-digits" data set: real handwritten digits + real spoken digits + short texts.

Each sample pairs an 8×8 handwritten digit scan (scikit-learn's digits), an 8 kHz recording of a person
saying the same digit (Free Spoken Digit Dataset) and a short description ("a handwritten seven",
"someone says seven"). Splits are honest: one held-out speaker per evaluation split (val: nicolas, test:
theo) and disjoint image indices per split (stratified by digit). Sizes: train 2000, val 500, test 500.

Row fields: ``id`` ("img0123-7_theo_12": image index + recording name), ``image`` (uint8 [8, 8], ink is
bright), ``audio`` ((int16 [S], 8000)), ``text`` (str), ``label`` ("0".."9": digit strings, so sorted labels are
in digit order). Note: the text names the digit, so text alone reveals the label; it is there for
alignment / zero-shot / retrieval, or as an easy modality in fusion studies.
License: CC BY-SA 4.0 (see LICENSE-spoken-digits.md next to this file).
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ...registry import DATASETS

HERE = Path(__file__).resolve().parent
ARCHIVE, META = HERE / "spoken_digits.npz", HERE / "spoken_digits.json"
LABELS = [str(d) for d in range(10)]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@lru_cache(maxsize=1)
def _archive() -> dict[str, np.ndarray]:
    if not ARCHIVE.is_file():
        raise FileNotFoundError(f"{ARCHIVE} is missing: run scripts/build_spoken_digits.py to build it")
    with np.load(ARCHIVE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@lru_cache(maxsize=4096)
def _recording(index: int) -> np.ndarray:
    """int16 [S] samples of recording ``index`` (decoded from FLAC on first use)."""
    data = _archive()
    start, end = data["audio_offsets"][index], data["audio_offsets"][index + 1]
    wave, _ = sf.read(io.BytesIO(data["audio_flac"][start:end].tobytes()), dtype="int16")
    return wave


@DATASETS.register("spoken-digits", "real handwritten digits + spoken digits (FSDD) + texts; 2000/500/500")
class SpokenDigits:
    """Access to the packaged data: ``records(split)``, ``describe()``, ``default_modalities()``."""

    name = "spoken-digits"
    splits = ("train", "val", "test")
    labels = LABELS
    sample_rate = 8000

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(META.read_text())

    def records(self, split: str) -> list[dict[str, Any]]:
        """Rows of one split: {id, image uint8 [8, 8], audio (int16 [S], 8000), text, label "0".."9"}."""
        if split not in self.splits:
            raise KeyError(f"spoken-digits has no split {split!r}; splits: {', '.join(self.splits)}")
        data = _archive()
        names = data["audio_names"]
        rows = []
        for a, i, text in zip(data[f"{split}_audio_index"], data[f"{split}_image_index"], data[f"{split}_text"]):
            a, i = int(a), int(i)
            rows.append(
                {
                    "id": f"img{i:04d}-{names[a]}",
                    "image": data["images"][i],
                    "audio": (_recording(a), self.sample_rate),
                    "text": str(text),
                    "label": str(int(data["audio_digits"][a])),
                    "image_index": i,
                    "speaker": str(data["audio_speakers"][a]),
                }
            )
        return rows

    def describe(self) -> dict[str, Any]:
        """Sizes, speakers and image counts per split, modalities, labels and sources."""
        meta = self.meta
        return {
            "name": self.name,
            "sizes": meta["sizes"],
            "speakers": meta["speakers"],
            "images_per_split": meta["image_counts"],
            "labels": LABELS,
            "modalities": {name: spec["kind"] for name, spec in self.default_modalities().items()},
            "sources": {
                "image": "scikit-learn load_digits: 1,797 real 8x8 handwritten digit scans (UCI optdigits), CC BY 4.0",
                "audio": "Free Spoken Digit Dataset: 3,000 real 8 kHz recordings, 6 speakers, CC BY-SA 4.0",
                "text": f"{len(meta['templates'])} description templates, e.g. {meta['templates'][0]!r}",
            },
            "license": "CC BY-SA 4.0 (see polymodal/data/builtin/LICENSE-spoken-digits.md)",
            "note": "text names the digit: text alone reveals the label",
        }

    @staticmethod
    def default_modalities() -> dict[str, dict[str, Any]]:
        """ModalityConfig-shaped dicts that suit this data (small inputs for the from-scratch presets)."""
        return {
            "image": {"kind": "image", "processor": {"image_size": 32, "channels": 1, "mean": [0.3], "std": [0.4]}},
            "audio": {
                "kind": "audio",
                "processor": {
                    "sample_rate": 8000,
                    "max_seconds": 1.0,  # 99% of the recordings are shorter; T = 101 frames
                    "n_fft": 256,
                    "win_length": 200,
                    "hop_length": 80,
                    "n_mels": 40,
                },
            },
            "text": {"kind": "text", "processor": {"max_length": 16}},
        }

    def default_model_config(self, modalities: list[str] | None = None) -> dict[str, Any]:
        """A ModelConfig-shaped dict (modalities + head labels); pass it to ``from_dict(ModelConfig, ...)``."""
        specs = self.default_modalities()
        chosen = modalities or list(specs)
        unknown = [m for m in chosen if m not in specs]
        if unknown:
            raise KeyError(f"spoken-digits has no modality {unknown}; modalities: {list(specs)}")
        return {"modalities": {m: specs[m] for m in chosen}, "head": {"task": "multiclass", "labels": list(LABELS)}}
