"""The CLI as a new user drives it: demo --quick, train → eval → predict, resume, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from cli_fixtures import tiny_recipe
from PIL import Image

from polymodal.cli import main

TINY_RECIPE = tiny_recipe()


def test_demo_quick_writes_table_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--fusions", "concat", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| model | fusion | params | test accuracy | macro-F1 | train time (s) |" in printed
    results = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in results["rows"]] == ["image only", "audio only", "image+audio concat"]
    for row in results["rows"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["params"] > 0 and row["train_seconds"] > 0
    assert (out / "results.md").read_text().count("\n|") >= 4
    best = out / "runs" / "image_audio_concat" / "best"  # the only fused model: the one to serve
    assert f"polymodal serve {best}" in printed and f"polymodal export {best} --format onnx" in printed


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    recipe = root / "recipe.yaml"
    recipe.write_text(TINY_RECIPE)
    assert main(["train", str(recipe), "--out", str(root / "run"), "--set", "train.seed=1"]) == 0
    return root


def test_train_writes_run_directory(trained_run):
    run = trained_run / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "metrics.json", "best/config.json",
                 "best/model.safetensors", "checkpoints/last/trainer_state.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["fit"]["global_step"] == 8  # 60 rows / 16 per batch = 4 steps × 2 epochs
    assert summary["parameters"]["trainable"] == summary["parameters"]["total"] > 0
    assert set(summary["test"]) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "roc_auc"}


def test_eval_reproduces_the_test_metrics(trained_run, tmp_path):
    run = trained_run / "run"
    assert main(["eval", str(run), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["confusion_matrix"] == expected["confusion_matrix"]


def test_predict_on_raw_files(trained_run, tmp_path, capsys):
    image = tmp_path / "seven.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(image)
    audio = tmp_path / "seven.wav"
    sf.write(audio, (np.random.default_rng(1).standard_normal(6000) * 0.1).astype(np.float32), 8000)
    capsys.readouterr()
    assert main(["predict", str(trained_run / "run"), "--image", str(image), "--audio", str(audio), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] in [str(d) for d in range(10)]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_resume_from_cli_matches_straight_run(trained_run, tmp_path):
    from polymodal.config import load_config
    from polymodal.pipeline import train

    recipe = trained_run / "recipe.yaml"
    config = load_config(recipe, ["train.seed=1", f"train.out_dir={tmp_path / 'split'}"])
    from polymodal.training import Trainer

    # Interrupt after 5 of the 8 steps, then let the CLI finish the run with --resume.
    original_fit = Trainer.fit
    Trainer.fit = lambda self, resume=False: original_fit(self, resume=resume, stop_after_steps=5)
    try:
        train(config, verbose=False)
    finally:
        Trainer.fit = original_fit
    assert main(["train", str(recipe), "--resume", "--out", str(tmp_path / "split"), "--set", "train.seed=1"]) == 0
    straight = json.loads((trained_run / "run" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert resumed["fit"]["global_step"] == 8
    assert resumed["test"]["accuracy"] == pytest.approx(straight["test"]["accuracy"])
    straight_losses = [r["train_loss"] for r in straight["fit"]["history"]]
    resumed_losses = [r["train_loss"] for r in resumed["fit"]["history"]]
    assert resumed_losses == pytest.approx(straight_losses, abs=1e-5)


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(TINY_RECIPE.replace("epochs: 2", "epochz: 2"))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "train.epochz" in err and "epochs" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "recipe.yaml"), "--set", "train.lr=fast"]) == 2
    assert main(["predict", str(tmp_path / "no_such_model"), "--text", "seven"]) == 2
