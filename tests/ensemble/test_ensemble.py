"""`polymodal ensemble` end to end on the built-in spoken-digits data: two tiny classifiers with different fusions,
each method's numbers against the members' probabilities, stacking on validation rows only, save → load,
predict / eval / eval --compare / serve on the ensemble directory, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.cli import main
from polymodal.ensemble import EnsembleError, EnsembleModel
from polymodal.inference import Predictor
from polymodal.recipes.ensemble import build_ensemble, split_predictions

# The demo's modalities, smaller: each member reaches ~0.9 test accuracy in a few seconds of CPU training.
RECIPE = """
model:
  modalities:
    image: {{kind: image, encoder: image_cnn, processor: {{image_size: 16, channels: 1}}}}
    audio:
      kind: audio
      encoder: audio_transformer
      options: {{dim: 32, depth: 1, heads: 4}}
      processor: {{sample_rate: 8000, n_fft: 256, hop_length: 80, n_mels: 40, max_seconds: 1.0}}
  fusion: {{name: {fusion}, dim: 32}}
data: {{name: spoken-digits, limit: 400, batch_size: 32}}
train: {{epochs: 6, lr: 0.003, progress: false, log_every: 0, seed: {seed}}}
"""

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    paths = []
    for fusion, seed in (("concat", 1), ("gated", 2)):
        recipe = root / f"{fusion}.yaml"
        recipe.write_text(RECIPE.format(fusion=fusion, seed=seed))
        assert main(["train", str(recipe), "--out", str(root / fusion)]) == 0
        paths.append(root / fusion)
    return root, paths


@pytest.fixture(scope="module")
def test_preds(runs):
    _, paths = runs
    members = build_ensemble(paths, "mean").members
    return split_predictions(list(members), "test")


def member_probs_on(model: EnsembleModel, batch) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([m(batch).logits.double().softmax(-1) for m in model.members])


@pytest.fixture(scope="module")
def test_batch(runs):
    from polymodal.evaluation.report import eval_config_for
    from polymodal.pipeline import prepare

    model = build_ensemble(runs[1], "mean")
    _, loaders, _ = prepare(eval_config_for(model, None, "test"), splits=("test",))
    return next(iter(loaders["test"]))


@pytest.mark.parametrize("method", ["mean", "vote", "weighted", "stack"])
def test_each_method_combines_the_members_probabilities(runs, test_batch, method):
    model = build_ensemble(runs[1], method)
    p = member_probs_on(model, test_batch)
    with torch.no_grad():
        out = model(test_batch).logits.double().softmax(-1)
    if method == "mean":
        expected = p.mean(0)
    elif method == "vote":
        votes = torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).double().sum(0)
        expected = (votes + 0.5 * p.mean(0)) / 2.5
    elif method == "weighted":  # weights ∝ validation accuracy of each member
        val = split_predictions(list(model.members), "val")
        acc = torch.stack([(q.argmax(-1) == val["y"]).double().mean() for q in val["probs"]])
        expected = (acc[:, None, None] / acc.sum() * p).sum(0)
        torch.testing.assert_close(model.weights, acc / acc.sum())
    else:
        x = torch.cat([p[0].log(), p[1].log()], dim=1)
        expected = (x @ model.stacker_weight.T + model.stacker_bias).softmax(-1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_weighted_from_log_loss(runs):
    model = build_ensemble(runs[1], "weighted", weights_from="log_loss")
    losses = [m["val"]["log_loss"] for m in model.info["members"]]
    expected = torch.tensor([np.exp(-v) for v in losses], dtype=torch.float64)
    torch.testing.assert_close(model.weights, expected / expected.sum())


def test_stacking_reads_the_validation_split_only(runs, monkeypatch):
    import polymodal.recipes.train as pipeline  # the ensemble recipe prepares data with the train recipe's prepare

    seen_splits, real_prepare = [], pipeline.prepare

    def recording_prepare(config, splits=("train", "val", "test")):
        seen_splits.append(tuple(splits))
        return real_prepare(config, splits=splits)

    monkeypatch.setattr(pipeline, "prepare", recording_prepare)
    model = build_ensemble(runs[1], "stack")
    assert seen_splits == [("val",)]  # no test (nor train) row is loaded while fitting
    monkeypatch.setattr(pipeline, "prepare", real_prepare)
    val = split_predictions(list(model.members), "val")
    test = split_predictions(list(model.members), "test")
    assert model.info["fitted_on"] == {"split": "val", "rows": len(val["ids"])}
    assert not set(val["ids"]) & set(test["ids"])
    # refitting on exactly the validation rows gives the saved stacker: the fit saw those rows and no others
    from polymodal.ensemble.stacking import fit_logistic_regression, stack_features

    weight, bias = fit_logistic_regression(stack_features(val["probs"].log()), val["y"], len(model.labels))
    torch.testing.assert_close(model.stacker_weight, weight, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model.stacker_bias, bias, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", ["vote", "stack"])
def test_save_load_gives_identical_predictions(runs, test_batch, tmp_path, method):
    model = build_ensemble(runs[1], method)
    model.save_pretrained(tmp_path / "ens")
    assert sorted(p.name for p in (tmp_path / "ens" / "members").iterdir()) == ["0", "1"]
    payload = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert payload["task"] == "classification" and payload["kind"] == "ensemble"
    assert payload["method"] == method and [m["fusion"] for m in payload["members"]] == ["concat", "gated"]
    loaded = EnsembleModel.from_pretrained(tmp_path / "ens")
    with torch.no_grad():
        torch.testing.assert_close(loaded(test_batch).logits, model(test_batch).logits, atol=0, rtol=0)


def test_a_member_path_outside_the_directory_is_refused(runs, tmp_path):
    build_ensemble(runs[1], "mean").save_pretrained(tmp_path / "ens")
    config = tmp_path / "ens" / "config.json"
    payload = json.loads(config.read_text())
    payload["members"][1]["path"] = "../../elsewhere"
    config.write_text(json.dumps(payload))
    with pytest.raises(EnsembleError, match="members\\[1\\].path '../../elsewhere' is not a folder inside"):
        EnsembleModel.from_pretrained(tmp_path / "ens")


@pytest.fixture(scope="module")
def ensemble_dir(runs):
    root, paths = runs
    out = root / "ens_mean"
    assert main(["ensemble", *map(str, paths), "--method", "mean", "--out", str(out)]) == 0
    return out


def test_ensemble_of_two_fusions_matches_or_beats_the_best_member(ensemble_dir, capsys):
    report = json.loads((ensemble_dir / "ensemble_report.json").read_text())
    assert (ensemble_dir / "ensemble_report.md").read_text().startswith("# Ensemble (mean) on the test split")
    rows = report["comparisons"]
    assert len(rows) == 2 and all(r["ensemble_accuracy"] == report["ensemble_accuracy"] for r in rows)
    best = max(rows, key=lambda r: r["member_accuracy"])
    print(json.dumps(rows, indent=1))
    # not significantly worse than the best member: the paired CI of ensemble − best member reaches 0 or above
    assert best["ci_high"] >= 0.0
    assert best["ci_low"] <= best["difference"] <= best["ci_high"]


def test_predict_eval_and_compare_accept_the_ensemble(ensemble_dir, runs, tmp_path, capsys):
    image, audio = tmp_path / "x.png", tmp_path / "x.wav"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(image)
    sf.write(audio, (rng.standard_normal(4000) * 0.1).astype(np.float32), 8000)
    capsys.readouterr()
    assert main(["predict", str(ensemble_dir), "--image", str(image), "--audio", str(audio), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ensemble = Predictor(ensemble_dir)
    expected = ensemble.predict_batch([{"image": str(image), "audio": str(audio)}])[0]
    assert printed["label"] == expected.label
    members = [Predictor(p) for p in runs[1]]
    mean = np.mean([list(m.predict_batch([{"image": str(image), "audio": str(audio)}])[0].probabilities.values())
                    for m in members], axis=0)
    np.testing.assert_allclose(list(expected.probabilities.values()), mean, atol=1e-5)

    out = tmp_path / "eval"
    assert main(["eval", str(ensemble_dir), "--out", str(out), "--no-robustness", "--no-efficiency",
                 "--bootstrap", "50"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((ensemble_dir / "ensemble_report.json").read_text())
    assert metrics["accuracy"] == pytest.approx(report["ensemble_accuracy"], abs=1e-9)

    capsys.readouterr()
    assert main(["eval", "--compare", str(ensemble_dir), str(runs[1][0]), "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert f"A: {ensemble_dir}" in text and "difference A−B" in text


def test_serve_accepts_the_ensemble(ensemble_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from polymodal.inference.serve import ServeSettings, create_app

    predictor = Predictor(ensemble_dir)
    with TestClient(create_app(predictor, ServeSettings(max_batch=2, max_wait_ms=1))) as client:
        info = client.get("/v1/model").json()
    assert info["architecture"] == "EnsembleModel" and info["labels"] == predictor.labels


def test_mismatched_label_sets_name_both_runs(runs, tmp_path, capsys):
    from polymodal.models import MultimodalModel

    other = MultimodalModel.from_pretrained(runs[1][1] / "best")
    other.labels = [f"class{i}" for i in range(len(other.labels))]
    other.config.head.labels = list(other.labels)
    other.save_pretrained(tmp_path / "other")
    capsys.readouterr()
    code = main(["ensemble", str(runs[1][0]), str(tmp_path / "other"), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(tmp_path / "other") in err and str(runs[1][0]) in err and "same label set" in err
    assert not (tmp_path / "bad").exists()


def test_a_single_run_or_an_unknown_method_is_refused(runs, capsys):
    assert main(["ensemble", str(runs[1][0]), "--out", "x"]) == 2
    assert "at least two runs" in capsys.readouterr().err
    with pytest.raises(EnsembleError, match="unknown --method 'max'"):
        build_ensemble(runs[1], "max")
