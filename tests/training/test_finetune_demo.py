"""`polymodal demo --task finetune` smoke test: a reduced run (30 samples per split, 1 epoch, 2 strategies)."""

from __future__ import annotations

import json
import time


def test_finetune_demo_quick_smoke(tmp_path):
    from polymodal.training.finetune_demo import run_finetune_demo

    # CPU time, not wall time: on a shared machine the wall clock measures the neighbours too.
    started = time.process_time()
    result = run_finetune_demo(tmp_path, quick=True, epochs=1, limit=30, strategies=["frozen + cache", "lora r=8"])
    assert time.process_time() - started < 60
    rows = {r["strategy"]: r for r in result["rows"]}
    assert set(rows) == {"frozen + cache", "lora r=8"}
    assert rows["frozen + cache"]["feature_cache"] == "miss"
    assert 0 < rows["frozen + cache"]["trainable_params"] < rows["lora r=8"]["trainable_params"]
    assert all(0 <= r["test_accuracy"] <= 1 and r["peak_memory_mib"] >= 0 for r in rows.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == result["rows"]
    assert "| frozen + cache |" in (tmp_path / "results.md").read_text()
