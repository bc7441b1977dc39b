"""Smoke test of benchmarks/retrieval_scale.py at tiny size: every backend is measured and the report is complete."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "retrieval_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("retrieval_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["retrieval_scale"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("retrieval_scale", None)


def test_gallery_is_clustered_and_queries_are_near_items(bench):
    gallery, assign, spreads = bench.make_gallery(3000, 32, 3, spread=0.7, seed=0, chunk=1000)
    assert gallery.shape == (3000, 32)
    torch.testing.assert_close(gallery.norm(dim=1), torch.ones(3000))
    # items of one cluster are far more alike than items of two clusters
    same = (gallery[assign == 0][:50] @ gallery[assign == 0][50:100].T).mean()
    other = (gallery[assign == 0][:50] @ gallery[assign == 1][:50].T).mean()
    assert same > 0.4 and abs(other) < 0.2
    queries = bench.make_queries(gallery, assign, spreads, 20, noise=0.3, seed=1)
    assert (queries @ gallery.T).max(dim=1).values.min() > 0.9  # each query sits next to its source item


def test_recall_counts_the_true_neighbours_found(bench):
    truth = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = torch.tensor([[4, 3, 9, 1], [5, 6, 7, 8]])
    assert bench.recall(found, truth) == pytest.approx(7 / 8)


def test_quick_run_reports_every_backend(bench, tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("usearch.index")
    out = tmp_path / "r.md"
    record = bench.main(["--quick", "--n", "3000", "--out", str(out)])
    names = [r["name"] for r in record["results"]]
    assert names == ["faiss-ivf", "faiss-hnsw", "usearch"] and not record["skipped"]
    for r in record["results"]:
        assert 0.0 <= r["recall"] <= 1.0 and r["build_s"] >= 0 and r["structure_bytes"] > 0
        assert r["batch"].queries == 256 and r["single"].queries == 20
        values = [s["value"] for s in r["sweep"]]
        assert r["chosen"] in values and values == sorted(values)
        reaching = [s["value"] for s in r["sweep"] if s["recall"] >= 0.95]
        assert r["chosen"] == (reaching[0] if reaching else values[-1])
    assert record["exact"]["batch"].qps > 0
    text = out.read_text()
    assert "Command: `python benchmarks/retrieval_scale.py --quick --n 3000" in text
    assert "| exact (torch brute force) |" in text and "Recall@10" in text and "p50 / p99" in text
