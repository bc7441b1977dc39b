"""Smoke test of benchmarks/vlm_step.py at tiny size: polymodal's VLM and HF's LLaVA hold the same weights and
compute the same loss and greedy tokens, and the report has the train and generation rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vlm_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vlm_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vlm_step"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("vlm_step", None)


def test_quick_run_checks_parity_and_writes_both_rows(bench, tmp_path):
    out = tmp_path / "vlm.md"
    record = bench.main(["--quick", "--reps", "2", "--warmup", "0", "--out", str(out)])
    parity = record["parity"]
    assert parity["abs_loss_diff"] <= bench.LOSS_TOL and parity["tokens_equal"]
    assert parity["token_shape"] == [4, 8]  # batch 4, 8 new tokens: min_new_tokens forces every row to run on
    assert parity["max_abs_loss_diff_all_rounds"] < 1e-5  # trained side by side, the weights stay in step
    for name in ("polymodal", "hf"):
        r = record["results"][name]
        assert len(r["train"]["times_s"]) == 2 and r["train"]["median_s"] > 0
        assert r["generate"]["tokens_per_s"] == pytest.approx(4 * 8 / r["generate"]["median_s"])
        assert r["train_peak_bytes"] > 0 and r["generate_peak_bytes"] > 0
    # same trainable weights: vision tower frozen on both sides (LLaVA stage 2)
    assert record["results"]["polymodal"]["trainable"] == record["results"]["hf"]["trainable"]
    text = out.read_text()
    assert "Command: `python benchmarks/vlm_step.py --quick --reps 2 --warmup 0 --out" in text
    assert "| train step [ms] (HF time ÷ polymodal time) |" in text
    assert "| generation [tokens/s] (batch 4, 8 new; polymodal ÷ HF) |" in text
    assert "| time to first token [ms]" in text and "greedy tokens identical" in text
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_both_models_hold_the_same_weights_and_see_the_same_samples(bench):
    s = bench.Sizes.quick()
    ours = bench.build_polymodal(s, train_vision=False)
    hf = bench.build_hf(s, ours, train_vision=False)
    torch.testing.assert_close(hf.lm_head.weight, ours.decoder.lm_head.weight, rtol=0, atol=0)
    qkv = ours.encoders["image"].tower.transformer.blocks[0].qkv.weight
    attn = hf.model.vision_tower.state_dict()
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in attn) else ""
    q = attn[f"{prefix}encoder.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(q, qkv[: s.vision_width])
    batches = bench.make_batches(s, ours, "cpu")
    image = ours.placeholder_ids["image"]
    train_ours, train_hf = batches["train"]["polymodal"], batches["train"]["hf"]
    # one placeholder per sample for polymodal, one per vision token for HF; the same answer labels
    assert (train_ours.input_ids == image).sum(1).tolist() == [1] * s.batch
    assert (train_hf["input_ids"] == image).sum(1).tolist() == [s.vision_tokens] * s.batch
    for b in range(s.batch):
        ours_labels = train_ours.labels[b][train_ours.labels[b] != -100]
        hf_labels = train_hf["labels"][b][train_hf["labels"][b] != -100]
        assert torch.equal(ours_labels, hf_labels) and len(ours_labels) > 0
    prompt = batches["prompt"]["hf"]["attention_mask"]
    assert prompt[:, -1].all() and not prompt[:, 0].all()  # HF prompts are left-padded


def test_paired_ratio_interval_and_verdict(bench):
    pair = bench.paired([1.0, 1.0, 1.0, 1.0], [1.2, 1.3, 1.25, 1.1])
    assert pair["median"] == pytest.approx(1.225) and pair["min"] == pytest.approx(1.1)
    assert 1.1 <= pair["ci95"][0] <= pair["median"] <= pair["ci95"][1] <= 1.3
    assert bench.verdict(pair).startswith("met")
    assert bench.verdict({"ci95": [0.8, 0.95]}).startswith("NOT met")
    assert bench.verdict({"ci95": [0.95, 1.05]}).startswith("not resolved")
