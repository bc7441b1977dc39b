"""Shipping verbs end to end through the CLI: export (ONNX), predict --backend onnx, compress (int8, distill),
explain, on a tiny image + audio classifier trained here by `polymodal train`; and their one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
import yaml
from cli_fixtures import tiny_recipe
from PIL import Image

from polymodal.cli import main

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TINY_RECIPE = tiny_recipe(seed=1)
LABELS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ship")
    recipe = root / "recipe.yaml"
    recipe.write_text(TINY_RECIPE)
    assert main(["train", str(recipe), "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two image + audio pairs (different content, so predictions are not trivially equal across them)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(2):
        image, audio = root / f"digit{i}.png", root / f"digit{i}.wav"
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(image)
        sf.write(audio, (rng.standard_normal(4000 + 2000 * i) * 0.1).astype(np.float32), 8000, subtype="PCM_16")
        pairs.append((str(image), str(audio)))
    return pairs


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    return out


def one_line_error(capsys, verb: str) -> str:
    """The single stderr line of a failed command (asserts it is one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"polymodal {verb}: error: "), err
    return err


def predict_json(capsys, model, image, audio, *extra) -> dict:
    capsys.readouterr()
    assert main(["predict", str(model), "--image", image, "--audio", audio, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------- export + predict


def test_export_writes_graph_and_prints_parity_table(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(out), "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["classifier.onnx", "manifest.json", "processors.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["opset"] == 17 and manifest["labels"] == LABELS
    assert manifest["task"] == "classification" and manifest["head_task"] == "multiclass"
    row = next(line for line in printed.splitlines() if line.startswith("classifier"))
    diff = float(re.search(r"\s(\d\.\d\de[-+]\d\d)\s", row).group(1))
    assert diff == pytest.approx(manifest["parity"]["max_abs_diff"]["classifier"], rel=0.01, abs=1e-12)
    assert diff <= 1e-4
    assert "image.pixel_values" in row and "audio.features" in row
    assert f"polymodal predict {out} --backend onnx --image IMAGE_FILE --audio AUDIO_FILE" in printed


def test_predict_onnx_backend_gives_the_torch_label_and_probabilities(run_dir, export_dir, inputs, capsys):
    for image, audio in inputs:
        torch_pred = predict_json(capsys, run_dir, image, audio)
        onnx_pred = predict_json(capsys, export_dir, image, audio, "--backend", "onnx")
        assert onnx_pred["label"] == torch_pred["label"]
        assert onnx_pred["modalities"] == torch_pred["modalities"] == ["image", "audio"]
        for label in LABELS:
            assert onnx_pred["probabilities"][label] == pytest.approx(torch_pred["probabilities"][label], abs=1e-5)
    # The human-readable output has the same format and the same first line.
    image, audio = inputs[0]
    assert main(["predict", str(run_dir), "--image", image, "--audio", audio, "--top", "3"]) == 0
    torch_text = capsys.readouterr().out.splitlines()
    assert main(["predict", str(export_dir), "--backend", "onnx", "--image", image, "--audio", audio, "--top", "3"]) == 0
    onnx_text = capsys.readouterr().out.splitlines()
    assert onnx_text[0] == torch_text[0] and onnx_text[0].startswith("prediction: ")
    assert len(onnx_text) == len(torch_text) == 4


def test_export_again_needs_overwrite_and_no_verify_says_unchecked(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out), "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "not checked" in printed and json.loads((out / "manifest.json").read_text())["parity"] is None
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "--overwrite" in one_line_error(capsys, "export")
    assert main(["export", str(run_dir), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["parity"]["max_abs_diff"]["classifier"] <= 1e-4


def test_wrong_backend_or_missing_dir_is_one_line_error(run_dir, export_dir, inputs, tmp_path, capsys):
    image, audio = inputs[0]
    assert main(["predict", str(run_dir), "--backend", "onnx", "--image", image]) == 2
    err = one_line_error(capsys, "predict")
    assert "not an ONNX export" in err and "polymodal export" in err
    assert main(["predict", str(export_dir), "--image", image]) == 2
    assert "--backend onnx" in one_line_error(capsys, "predict")
    assert main(["predict", str(tmp_path / "nowhere"), "--backend", "onnx", "--image", image]) == 2
    assert "nowhere is not an ONNX export" in one_line_error(capsys, "predict")
    assert main(["export", str(tmp_path / "no_model"), "--out", str(tmp_path / "out")]) == 2
    assert "no_model is neither a model directory" in one_line_error(capsys, "export")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- compress


def test_compress_int8_writes_a_smaller_export_that_predicts(run_dir, inputs, tmp_path, capsys):
    out = tmp_path / "int8"
    capsys.readouterr()
    assert main(["compress", str(run_dir), "--method", "int8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and (out / "classifier.onnx").is_file()
    assert "ONNX fp32" in printed and "ONNX int8" in printed and "model (PyTorch, fp32)" in printed
    ratio = float(re.search(r"\((\d+\.\d\d) of fp32 ONNX\)", printed).group(1))
    int8_bytes = sum(p.stat().st_size for p in out.iterdir())
    assert ratio == pytest.approx(int8_bytes / manifest["graphs"]["classifier"]["fp32_bytes"], abs=0.2)
    # This tiny model's weights are mostly convolutions, which dynamic int8 leaves in fp32: the CLI says so
    # (tests/inference/test_compress.py shows the size gain on a Linear-heavy ViT).
    assert ("not smaller" in printed) == (ratio >= 1.0)
    image, audio = inputs[0]
    prediction = predict_json(capsys, out, image, audio, "--backend", "onnx")
    assert prediction["label"] in LABELS
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("wrapped", [False, True], ids=["model-section", "sections"])
def test_compress_distill_trains_a_smaller_student(run_dir, tmp_path, capsys, wrapped):
    student = {"fusion": {"name": "concat", "dim": 8},
               "modalities": {"image": {"encoder": "image_cnn", "options": {"channels": [4, 8]}},
                              "audio": {"encoder": "audio_cnn", "options": {"channels": [4, 8]}}}}
    if wrapped:  # the other accepted shape: sections, training options in the file
        student = {"model": student, "train": {"epochs": 1, "lr": 0.003}}
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(student))
    out = tmp_path / "student_run"
    sets = [] if wrapped else ["--set", "train.epochs=1"]
    capsys.readouterr()
    assert main(["compress", str(run_dir), "--method", "distill", "--student", str(path), "--out", str(out),
                 "--temperature", "3", "--alpha", "0.7", "--set", "data.limit=40", *sets]) == 0
    printed = capsys.readouterr().out
    assert (out / "best" / "model.safetensors").is_file()
    config = yaml.safe_load((out / "config.yaml").read_text())
    # --set data.* refines the teacher's data section (built-in set kept), train.* reaches the Trainer
    assert config["data"]["name"] == "spoken-digits" and config["data"]["limit"] == 40
    assert config["train"]["epochs"] == 1 and config["model"]["fusion"]["dim"] == 8
    assert "T=3, alpha=0.7" in printed
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.split()[:1] in (["teacher"],
                                                                                                  ["student"])}
    teacher_params, student_params = (int(rows[name][1].replace(",", "")) for name in ("teacher", "student"))
    assert 0 < student_params < teacher_params
    for name in ("teacher", "student"):
        assert 0.0 <= float(rows[name][-2]) <= 1.0  # test accuracy (the data has a test split)


def test_compress_errors_are_one_line(run_dir, tmp_path, capsys):
    student = tmp_path / "student.yaml"
    student.write_text("fusion: {name: concat, dim: 8}\n")
    cases = [
        (["compress", str(run_dir), "--method", "distill", "--out", str(tmp_path / "s")], "--student"),
        (["compress", str(run_dir), "--method", "int8", "--out", str(tmp_path / "q"), "--student", str(student)],
         "--student apply to --method distill"),
        (["compress", str(run_dir), "--method", "int8", "--out", str(tmp_path / "q"), "--set", "train.epochs=1"],
         "--set apply to --method distill"),
        (["compress", str(tmp_path / "no_model"), "--method", "int8", "--out", str(tmp_path / "q")], "no_model"),
        (["compress", str(tmp_path / "no_model"), "--method", "distill", "--student", str(student), "--out",
          str(tmp_path / "s")], "no_model"),
        (["compress", str(run_dir), "--method", "distill", "--student", str(tmp_path / "nope.yaml"), "--out",
          str(tmp_path / "s")], "nope.yaml"),
        (["compress", str(run_dir), "--method", "distill", "--student", str(student), "--out", str(tmp_path / "s"),
          "--set", "optim.lr=1"], "model.*, train.* or data.*"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert expected in one_line_error(capsys, "compress"), argv
    assert not (tmp_path / "q").exists() and not (tmp_path / "s").exists()
    bad = tmp_path / "bad_student.yaml"
    bad.write_text("model: {fusion: {name: concat}}\noptimizer: {lr: 1}\n")
    assert main(["compress", str(run_dir), "--method", "distill", "--student", str(bad), "--out",
                 str(tmp_path / "s")]) == 2
    assert "'optimizer'" in one_line_error(capsys, "compress")
    for argv in (["compress", str(run_dir), "--method", "prune", "--out", "x"],
                 ["compress", str(run_dir), "--method", "distill", "--out", "x", "--alpha", "1.5"],
                 ["compress", str(run_dir), "--method", "distill", "--out", "x", "--temperature", "0"]):
        with pytest.raises(SystemExit) as exit_info:  # argparse usage errors: one line, status 2
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error:" in err


# ---------------------------------------------------------------------------------------------- explain


def test_explain_writes_page_and_prints_prediction_and_shapley(run_dir, inputs, tmp_path, capsys):
    image, audio = inputs[0]
    torch_label = predict_json(capsys, run_dir, image, audio)["label"]
    out = tmp_path / "explain"
    assert main(["explain", str(run_dir), "--image", image, "--audio", audio, "--out", str(out), "--steps", "8"]) == 0
    printed = capsys.readouterr().out
    for name in ("index.html", "explanation.json", "ig_image.png", "ig_audio.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "explanation.json").read_text())
    assert summary["prediction"]["label"] == torch_label == summary["target"]["label"]
    assert printed.startswith(f"prediction: {torch_label} (p=")
    shapley = summary["shapley"]
    printed_values = {m: float(re.search(rf"^\s+{m}\s+([-+]\d\.\d+)$", printed, re.M).group(1))
                      for m in ("image", "audio")}
    for name, value in printed_values.items():
        assert value == pytest.approx(shapley["shapley"][name], abs=5e-5)
    # efficiency of Shapley values: they add up to p(all) - p(none)
    assert sum(shapley["shapley"].values()) == pytest.approx(shapley["full"] - shapley["empty"], abs=1e-6)
    assert "ig_image.png" in printed and "index.html" in printed


def test_explain_another_target_with_one_modality(run_dir, inputs, tmp_path, capsys):
    image, _ = inputs[1]
    out = tmp_path / "explain"
    assert main(["explain", str(run_dir), "--image", image, "--out", str(out), "--steps", "4", "--target", "3",
                 "--baseline", "image=mean"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "explanation.json").read_text())
    assert summary["target"]["label"] == "3" and "explained:  3 (p=" in printed
    assert list(summary["attributions"]) == ["image"] and summary["attributions"]["image"]["baseline"] == "mean"
    assert not (out / "ig_audio.png").exists()


def test_explain_errors_are_one_line(run_dir, inputs, tmp_path, capsys):
    image, _ = inputs[0]
    out = str(tmp_path / "e")
    cases = [
        (["explain", str(tmp_path / "no_model"), "--image", image, "--out", out], "no_model"),
        (["explain", str(run_dir), "--image", image, "--out", out, "--target", "eleven"], "eleven"),
        (["explain", str(run_dir), "--image", image, "--out", out, "--baseline", "image=white"], "image=black|mean"),
        (["explain", str(run_dir), "--out", out], "give at least one input"),
        (["explain", str(run_dir), "--image", str(tmp_path / "missing.png"), "--out", out], "missing.png"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert expected in one_line_error(capsys, "explain"), argv
