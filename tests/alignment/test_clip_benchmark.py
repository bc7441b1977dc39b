"""Smoke test of benchmarks/clip_train_step.py: the --quick run works and polymodal computes HF's step."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "clip_train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("clip_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_has_loss_parity_and_timings(bench, tmp_path):
    out = tmp_path / "result.md"
    record = bench.main(["--quick", "--models", "polymodal,hf,open_clip", "--out", str(out)])
    parity = record["parity"]["polymodal"]
    # same weights → same loss and gradients; weights trained side by side stay together
    assert parity["abs_loss_diff"] <= 1e-5
    assert parity["grad_rel_diff"] <= 1e-4
    assert parity["max_abs_loss_diff_all_rounds"] <= 1e-4
    assert math.isfinite(parity["loss"]) and parity["loss"] > 0
    for name in ("polymodal", "hf"):
        r = record["results"][name]
        assert len(r["times_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["samples_per_s"] == pytest.approx(4 / r["median_s"]) and 0 < r["mfu"]
    assert record["results"]["hf"]["speed_ratio"] == pytest.approx(
        record["results"]["hf"]["median_s"] / record["results"]["polymodal"]["median_s"])
    if bench.open_clip_status() is None:
        assert record["parity"]["open_clip"]["abs_loss_diff"] <= 1e-5
    else:  # not installed (needs torchvision): reported as skipped, with the reason
        assert "open_clip" in record["skipped"] and "torchvision" in record["skipped"]["open_clip"]
    text = out.read_text()
    assert "| polymodal (CLIPModelNative) |" in text and "interleaved" in text and "Command:" in text


def test_analytic_flops_match_a_hand_count(bench):
    c = bench.CLIPNativeConfig.tiny()  # vision 64×2 layers, 17 tokens; text 32×2 layers, 16 tokens
    layer = lambda n, d: 2 * n * d * 3 * d + 2 * n * d * d + 4 * n * d * 4 * d + 4 * n * n * d  # noqa: E731
    vision = 2 * layer(17, 64) + 2 * 16 * 3 * 64 * 64 + 2 * 64 * 32
    text = 2 * layer(16, 32) + 2 * 32 * 32
    assert bench.analytic_train_flops(c, 3) == 3 * 3 * (vision + text)
    short_text = 2 * layer(10, 32) + 2 * 32 * 32  # captions of at most 10 tokens: padding is not work
    assert bench.analytic_train_flops(c, 3, text_tokens=10) == 3 * 3 * (vision + short_text)


def test_short_caption_run_counts_flops_up_to_the_longest_caption(bench, tmp_path):
    record = bench.main(["--quick", "--models", "polymodal,hf", "--text-len", "6", "--reps", "1",
                         "--out", str(tmp_path / "short.md")])
    assert record["parity"]["polymodal"]["abs_loss_diff"] <= 1e-5  # padding skipped, same loss
    c = bench.CLIPNativeConfig.tiny()
    longest = int(bench.make_batch(c, 4, 6)[2].sum(dim=1).max())
    assert record["text_tokens"] == longest < c.context_length
    assert record["flops_per_step"] == bench.analytic_train_flops(c, 4, longest)
    assert "text up to" in (tmp_path / "short.md").read_text()


def test_parity_check_rejects_a_different_step(bench):
    """The gradient comparison is not vacuous: a perturbed polymodal weight is caught."""
    config = bench.CLIPNativeConfig.tiny()
    hf_model, hf_emb = bench.build_hf(config)
    native, native_emb = bench.build_polymodal(config, hf_model.state_dict())
    batch = bench.make_batch(config, 3, None)
    for emb in (hf_emb, native_emb):
        bench.clip_loss(*emb(*batch)).backward()
    assert bench.grad_mismatch(native, hf_model, config)[0] < 1e-4
    with torch.no_grad():
        native.text.transformer.blocks[0].fc1.weight.mul_(1.5)
    native.zero_grad()
    bench.clip_loss(*native_emb(*batch)).backward()
    worst, where = bench.grad_mismatch(native, hf_model, config)
    assert worst > 1e-2 and where.startswith("text_model.")


def test_verdict_does_not_call_a_ratio_inside_the_run_to_run_spread_a_pass(bench):
    assert bench.verdict(1.30) == "met"
    assert bench.verdict(1.21).startswith("at the edge") and bench.verdict(1.16).startswith("at the edge")
    assert bench.verdict(1.10) == "NOT met"
