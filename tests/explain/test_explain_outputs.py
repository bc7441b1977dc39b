"""explain(): one sample of a saved model → PNGs + a self-contained HTML page + explanation.json."""

from __future__ import annotations

import json
import os
import re
import stat
import sys

import numpy as np
import pytest
import torch
from explain_toy import AUDIO_CNN, IMAGE_VIT, TEXT, build_model

from polymodal.evaluation.robustness import evaluate_modality_ablations
from polymodal.explain import ExplainError, explain, sample_modality_shapley
from polymodal.inference.predictor import Predictor

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, (8, 8), dtype=np.uint8)
AUDIO = ((RNG.normal(size=3000) * 0.1).astype(np.float32), 8000)
SAMPLE = {"image": IMAGE, "audio": AUDIO, "text": "a handwritten seven"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    build_model({"image": IMAGE_VIT, "audio": AUDIO_CNN, "text": TEXT}, fusion="transformer").save_pretrained(directory)
    return directory


def test_outputs_exist_and_the_page_references_them(saved, tmp_path):
    summary = explain(saved, SAMPLE, tmp_path / "out", steps=16)
    out = tmp_path / "out"
    assert len(set(summary["files"])) == len(summary["files"])  # listed once each
    for name in summary["files"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    pngs = [name for name in summary["files"] if name.endswith(".png")]
    assert {"ig_image.png", "ig_audio.png", "rollout_image.png"} <= set(pngs)
    assert any(name.startswith("attention_") for name in pngs)
    page = (out / "index.html").read_text()
    for name in pngs:  # linked, and inlined as base64 (the page stands alone)
        assert f'href="{name}"' in page
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'src="(?!data:)', page)  # no external resource
    assert "handwritten" in page and 'class="tok"' in page  # text token scores as coloured tokens
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind
    written = json.loads((out / "explanation.json").read_text())
    assert written["target"] == summary["target"]
    assert written["attributions"]["text"]["tokens"][2]["token"] == "handwritten"


def test_summary_numbers(saved, tmp_path):
    summary = explain(saved, SAMPLE, tmp_path, steps=32)
    predictor = Predictor(saved)
    prediction = predictor.predict(SAMPLE)
    assert summary["prediction"]["label"] == prediction.label == summary["target"]["label"]
    for name in ("image", "audio", "text"):
        entry = summary["attributions"][name]
        assert abs(entry["convergence_delta"]) <= 0.02 * abs(entry["f_input"] - entry["f_baseline"]) + 1e-3
        assert entry["sum"] == pytest.approx(entry["f_input"] - entry["f_baseline"] + entry["convergence_delta"],
                                             abs=1e-4)
    shares = summary["fusion_attention"]["layers"][0]["cls_share"]
    assert set(shares) == {"CLS", "image", "audio", "text"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(summary["fusion_attention"]["rollout_cls_share"].values()) == pytest.approx(1.0, abs=1e-5)
    grid = np.array(summary["encoder_rollout"]["image"]["cls_map"])
    assert grid.shape == (4, 4) and grid.sum() == pytest.approx(1.0, abs=1e-3)
    shapley = summary["shapley"]
    assert sum(shapley["shapley"].values()) == pytest.approx(shapley["full"] - shapley["empty"], abs=1e-6)
    assert shapley["full"] == pytest.approx(summary["target"]["probability"], abs=1e-6)


def test_explaining_another_target_and_kind_aliases(saved, tmp_path):
    summary = explain(saved, {"image": IMAGE, "text": "zero"}, tmp_path, target="b", steps=8)
    assert summary["target"]["label"] == "b" and summary["target"]["index"] == 1
    assert set(summary["attributions"]) == {"image", "text"}  # audio not given: not attributed, not a player
    assert summary["shapley"]["players"] == ["image", "text"]


def test_cross_attention_and_late_fusion_models(tmp_path):
    model = build_model({"image": IMAGE_VIT, "text": TEXT}, fusion="cross_attention")
    summary = explain(model, {"image": IMAGE, "text": "one"}, tmp_path / "cross", steps=8)
    layers = summary["fusion_attention"]["layers"]
    assert {e["module"] for e in layers} >= {"fusion.streams.0.0.cross", "fusion.streams.1.0.cross"}
    for entry in layers:
        assert sum(entry["mean_share"].values()) == pytest.approx(1.0, abs=1e-5)
        assert (tmp_path / "cross" / entry["file"]).is_file()
    late = build_model({"image": IMAGE_VIT, "text": TEXT}, fusion="late")
    summary = explain(late, {"image": IMAGE, "text": "one"}, tmp_path / "late", steps=8)
    assert "fusion_attention" not in summary and (tmp_path / "late" / "index.html").is_file()


def test_sample_shapley_matches_the_evaluation_reports_ablations():
    """The one-sample Shapley values equal evaluate_modality_ablations' with v(S) = p(target) on that sample."""
    model = build_model({"image": IMAGE_VIT, "audio": AUDIO_CNN, "text": TEXT}, fusion="transformer")
    batch = Predictor(model).make_batch([SAMPLE])
    target = 2
    ours = sample_modality_shapley(model, batch, target)
    batch.labels = torch.tensor([target])
    report = evaluate_modality_ablations(model, [batch], metric=lambda y, probs: float(probs[0, y[0]]))
    for name in ("image", "audio", "text"):
        assert ours["shapley"][name] == pytest.approx(report["shapley"][name], abs=1e-6)
    assert ours["full"] == pytest.approx(report["full"], abs=1e-6)


def test_errors_name_the_argument(saved, tmp_path):
    with pytest.raises(ExplainError, match=r"target 'z' is not one of the model's labels \['a', 'b', 'c'\]"):
        explain(saved, SAMPLE, tmp_path, target="z", steps=4)
    with pytest.raises(ExplainError, match="unknown modality 'video'"):
        explain(saved, {"video": "x.mp4"}, tmp_path, steps=4)
    with pytest.raises(ExplainError, match="at least one of the model's modalities"):
        explain(saved, {"text": ""}, tmp_path, steps=4)
    with pytest.raises(FileNotFoundError, match="neither a model directory"):
        explain(tmp_path / "nothing", SAMPLE, tmp_path, steps=4)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_take_their_mode_from_the_umask(saved, tmp_path, umask):
    previous = os.umask(umask)
    try:
        summary = explain(saved, {"image": IMAGE}, tmp_path / "out", steps=4)
    finally:
        os.umask(previous)
    for name in summary["files"]:
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~umask, name


def test_without_captum_the_error_says_what_to_install(saved, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # import captum.attr → ImportError
    with pytest.raises(ExplainError, match=r"pip install 'polymodal\[explain\]'"):
        explain(saved, SAMPLE, tmp_path, steps=4)


def test_raw_waveform_audio_of_an_hf_encoder(tmp_path):
    from hf_fixtures import tiny_hf_model_dir

    wav2vec2 = {"kind": "audio", "pretrained": str(tiny_hf_model_dir("wav2vec2")),
                "processor": {"sample_rate": 16000, "max_seconds": 0.25}}
    model = build_model({"audio": wav2vec2}, fusion="concat")
    wave = (np.sin(np.arange(4000) / 7.0) * 0.3).astype(np.float32)
    summary = explain(model, {"audio": (wave, 16000)}, tmp_path, steps=16)
    entry = summary["attributions"]["audio"]
    assert entry["input"] == "input_values" and entry["baseline"] == "silence"
    assert entry["sum"] == pytest.approx(entry["f_input"] - entry["f_baseline"] + entry["convergence_delta"], abs=1e-4)
    assert (tmp_path / entry["file"]).is_file()
