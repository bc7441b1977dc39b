"""`polymodal demo --task finetune` smoke test: a reduced run (30 samples per split, 1 epoch, 2 strategies)."""

from __future__ import annotations

import json
import time


def test_finetune_demo_quick_smoke(tmp_path):
    from polymodal.recipes.demos.finetune import run_finetune_demo

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


def test_finetune_demo_from_a_hugging_face_checkpoint(tmp_path):
    """`polymodal demo --task finetune --pretrained DIR`: the audio encoder starts from an HF checkpoint."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hf_fixtures import tiny_hf_model_dir

    from polymodal.recipes.demos.finetune import run_finetune_demo

    checkpoint = tiny_hf_model_dir("wav2vec2")
    result = run_finetune_demo(tmp_path, quick=True, epochs=1, limit=30,
                               strategies=["frozen + cache", "lora r=8", "prompt 8 tokens"], hf_checkpoint=str(checkpoint))
    rows = {r["strategy"]: r for r in result["rows"]}
    assert set(rows) == {"frozen + cache", "lora r=8", "prompt 8 tokens"}
    # wav2vec2 has no transformer the prompt strategy can extend: reported as skipped, the table is still written
    assert "prompt tuning needs a transformer encoder" in rows["prompt 8 tokens"]["skipped"]
    assert 0 < rows["frozen + cache"]["trainable_params"] < rows["lora r=8"]["trainable_params"]
    assert str(checkpoint) in (tmp_path / "results.md").read_text()
