"""Smoke test of benchmarks/preprocessing.py at tiny size: every section runs and parity is reported."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "preprocessing.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("preprocessing_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["preprocessing_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("preprocessing_bench", None)


def test_photo_like_images_are_textured(bench):
    image = bench.photo_like(160, 120, np.random.default_rng(0))
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert image.std() > 20  # not a flat image: JPEG / PNG cost like a photo


@pytest.mark.slow
def test_pil_baseline_matches_transformers_slow_processor(bench, tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(bench.photo_like(320, 200, np.random.default_rng(1))).save(path)
    pipelines, _ = bench.image_pipelines(bench.clip_checkpoint_dir(tmp_path), workers=2)
    reference = pipelines["transformers CLIPImageProcessor, PIL backend (slow)"](path)
    assert tuple(reference.shape) == (3, 224, 224)
    assert bench.max_abs_diff(bench.pil_baseline(path, draft=False), reference) <= 1e-3


@pytest.mark.slow
def test_quick_run_covers_every_section(bench, tmp_path):
    out = tmp_path / "p.md"
    record = bench.main(["--quick", "--workers", "0", "--out", str(out)])
    images = record["images"]
    assert len(images["rows"]) == 4 and images["profile"]
    for row in images["rows"]:
        assert all(len(v) == 2 and min(v) > 0 for v in row["rates"].values())
        assert row["parity"][images["reference"]] == 0.0
        assert math.isfinite(row["parity"]["polymodal ImageProcessor (CLIP config)"])
        # the threaded batch path and transformers' list call give the reference's values exactly
        threaded = [n for n in row["parity"] if n.startswith("polymodal ImageProcessor.batch")]
        assert threaded and row["parity"][threaded[0]] <= 1e-3
        assert row["parity"]["transformers CLIPImageProcessor, PIL backend (slow), one call per list"] == 0.0
        # resize_backend: torch is one 8-bit level (1/255 / CLIP's smallest std 0.2613 = 0.015) from Pillow at most
        assert 0.0 < row["parity"][bench.POLY_TORCH] <= 1 / 255 / 0.26130258 + 1e-5
        assert bench.DECODE_ONLY in row["rates"] and bench.DECODE_ONLY not in row["parity"]  # no output to compare
    for row in record["audio"]["rows"]:
        assert all(math.isfinite(v) for v in row["parity"].values())
        assert all(v <= 1e-5 for v in row["same_wave"].values())  # the wrapper adds nothing to the extractor
    assert record["text"]["equal"] and record["text"]["count"] == 50
    assert record["loader"]["rows"][0]["samples"] == 64
    text = out.read_text()
    assert "Command: `python benchmarks/preprocessing.py --quick" in text and "## DataLoader" in text
    assert "with `batch` on" in text and "decode alone" in text
