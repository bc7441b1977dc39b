"""benchmarks/serve_load.py: its statistics, its report, and a tiny end-to-end run (two loopback servers)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import png_bytes, wav_bytes

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "serve_load.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("serve_load", None)


@pytest.mark.parametrize("q", [0, 12.5, 50, 95, 99, 100])
def test_percentile_matches_numpy(bench, q):
    values = list(np.random.default_rng(0).exponential(size=37))
    assert bench.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_report_has_the_table_ratios_and_memory(bench):
    args = bench.parse_args(["--requests", "4", "--concurrency", "1,8"])
    cells = []
    for mode, seconds in (("batched", 1.0), ("unbatched", 2.0)):
        for concurrency in (1, 8):
            cell = bench.Cell(mode, concurrency, latencies=[0.01, 0.02, 0.03, 0.04], seconds=seconds)
            cell.batches, cell.batched_requests = (2, 4) if mode == "batched" else (4, 4)
            cells.append(cell)
    report = bench.format_report(cells, {"batched": (100.0, 110.0), "unbatched": (100.0, 101.0)}, args,
                                 "python benchmarks/serve_load.py --requests 4", "tiny")
    assert "Command: `python benchmarks/serve_load.py --requests 4`" in report
    assert "| batched | 8 | 4 | 0 | 4.0 | 25.0 |" in report and "| 2.00 |" in report
    assert "- 8 clients: 2.00×" in report and "- batched: 100 → 110 (+10)" in report
    assert "Errors in all cells: 0" in report


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--max-batch", "1"])


@pytest.mark.slow
def test_a_tiny_run_end_to_end(bench, classifier_dir, tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "audio").mkdir()
    rows = []
    for i in range(3):
        (data / "images" / f"{i}.png").write_bytes(png_bytes(8, 8, seed=i))
        (data / "audio" / f"{i}.wav").write_bytes(wav_bytes(0.3, seed=i))
        rows.append({"id": str(i), "image": f"images/{i}.png", "audio": f"audio/{i}.wav", "label": "cat"})
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "serve_load.md"
    result = bench.main(["--model", str(classifier_dir), "--data", str(data), "--requests", "6",
                         "--concurrency", "1,3", "--warmup", "2", "--samples", "3", "--out", str(out)])
    rows = result["cells"]
    assert [(r["mode"], r["concurrency"]) for r in rows] == [("batched", 1), ("batched", 3), ("unbatched", 1),
                                                            ("unbatched", 3)]
    assert all(r["requests"] == 6 and r["errors"] == 0 and r["throughput"] > 0 for r in rows)
    assert all(r["mean_batch"] == 1 for r in rows if r["mode"] == "unbatched")
    assert set(result["rss"]) == {"batched", "unbatched"} and all(b > 0 for b, _ in result["rss"].values())
    assert out.read_text() == result["report"] and "Batched / unbatched throughput" in result["report"]
