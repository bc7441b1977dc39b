"""Predictor and `polymodal predict` for any task: the task turns outputs into predictions (Task.predict /
Task.postprocessor), and `predict MODEL --data ROWS --out PREDICTIONS` runs over an unlabelled manifest (JSONL or
CSV in, JSONL out) for classifiers, ensembles and alignment models, with errors naming file / row / field."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.cli import main
from polymodal.config import ModelConfig, from_dict
from polymodal.data import DataError
from polymodal.ensemble import EnsembleModel
from polymodal.inference import PredictionError, Predictor, predict_manifest
from polymodal.inference.batch import read_predictions
from polymodal.inference.export.runtime import manifest_tasks
from polymodal.models import AlignmentModel, MultimodalModel
from polymodal.models.aligner import AlignmentConfig
from polymodal.tasks import get_task, task_of
from polymodal.tasks.predictions import EmbeddingPrediction, Prediction

LABELS = ["cat", "dog", "bird"]
PHOTO = {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
         "processor": {"image_size": 8, "channels": 1, "max_pixels": 5000}}
CAPTION = {"kind": "text", "encoder": "text_transformer", "options": {"dim": 16, "depth": 1, "heads": 2},
           "processor": {"vocab_size": 256, "max_length": 12}}
MODALITIES = {"photo": PHOTO, "caption": CAPTION}


def classifier(seed: int = 0, task: str = "multiclass", fusion: str = "concat") -> MultimodalModel:
    torch.manual_seed(seed)
    return MultimodalModel(from_dict(ModelConfig, {"modalities": MODALITIES, "fusion": {"name": fusion, "dim": 8},
                                                   "head": {"task": task, "labels": LABELS}}))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Images, a classifier, an ensemble and an alignment model saved in one folder."""
    root = tmp_path_factory.mktemp("any_task")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(root / f"img{i}.png")
    Image.fromarray(rng.integers(0, 255, (100, 100), dtype=np.uint8)).save(root / "large.png")  # over max_pixels
    (root / "broken.png").write_bytes(b"not a png at all")
    classifier().save_pretrained(root / "classifier")
    classifier(1, "multilabel").save_pretrained(root / "multilabel")
    EnsembleModel([classifier(2), classifier(3, fusion="gated")], "mean").save_pretrained(root / "ensemble")
    torch.manual_seed(4)
    aligner = AlignmentModel(from_dict(AlignmentConfig, {"modalities": MODALITIES, "embed_dim": 16}))
    aligner.zeroshot = {"classnames": LABELS, "templates": {"photo": ["a photo of a {}."]}}
    aligner.save_pretrained(root / "aligner")
    return root


# Relative paths resolve against the manifest's folder; labels (even unknown ones) are ignored; absent cells ok.
ROWS = [
    {"id": "a", "photo": "img0.png", "caption": "a small cat", "label": "cat"},
    {"id": "b", "photo": "img1.png", "caption": "", "label": "not-a-label"},
    {"id": "c", "photo": "img2.png"},
    {"id": "d", "photo": "img3.png", "caption": "a dog barks"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path, rows):
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def one_by_one(predictor, root, rows):
    """The Predictor's single-sample predictions for the manifest rows (absolute paths, no label)."""
    samples = [{k: (str(root / v) if k == "photo" else v) for k, v in row.items() if k in MODALITIES and v}
               for row in rows]
    return [predictor.predict(sample) for sample in samples]


@pytest.mark.parametrize("name", ["classifier", "ensemble"])
def test_cli_predict_data_equals_single_predictions(root, tmp_path, name, capsys):
    manifest = write_jsonl(root / f"rows_{name}.jsonl", ROWS)
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(root / name), "--data", str(manifest), "--out", str(out), "--batch-size", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 4 classification predictions of 4 rows to {out}"
    written = read_predictions(out)
    assert [row["id"] for row in written] == ["a", "b", "c", "d"]
    expected = one_by_one(Predictor(root / name), root, ROWS)
    for row, want in zip(written, expected):
        assert row["label"] == want.label and row["modalities"] == want.modalities
        assert row["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert written[1]["modalities"] == ["photo"] and written[0]["modalities"] == ["photo", "caption"]


def test_csv_manifest_gives_the_same_predictions_as_jsonl(root, tmp_path):
    predictor = Predictor(root / "classifier")
    from_jsonl = predict_manifest(predictor, write_jsonl(root / "same.jsonl", ROWS), tmp_path / "j.jsonl")
    from_csv = predict_manifest(predictor, write_csv(root / "same.csv", ROWS), tmp_path / "c.jsonl")
    assert from_jsonl["written"] == from_csv["written"] == 4 and from_csv["task"] == "classification"
    for a, b in zip(read_predictions(tmp_path / "j.jsonl"), read_predictions(tmp_path / "c.jsonl")):
        assert a["id"] == b["id"] and a["label"] == b["label"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_rows_without_ids_are_numbered_and_kind_columns_reach_the_modality(root, tmp_path):
    # "image" / "text" columns: the kind alias of the one image / text modality, as --image / --text
    rows = [{"image": "img0.png", "text": "a cat"}, {"image": "img1.png"}]
    summary = predict_manifest(Predictor(root / "classifier"), write_jsonl(root / "kinds.jsonl", rows),
                               tmp_path / "p.jsonl")
    written = read_predictions(tmp_path / "p.jsonl")
    assert summary["rows"] == summary["written"] == 2 and [r["id"] for r in written] == ["1", "2"]
    want = Predictor(root / "classifier").predict(photo=str(root / "img0.png"), caption="a cat")
    assert written[0]["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)


def test_multilabel_threshold(root, tmp_path):
    manifest = write_jsonl(root / "ml.jsonl", ROWS)
    for threshold in (0.0, 1.01):
        out = tmp_path / f"ml{threshold}.jsonl"
        assert main(["predict", str(root / "multilabel"), "--data", str(manifest), "--out", str(out),
                     "--threshold", str(threshold)]) == 0
        labels = [row["label"] for row in read_predictions(out)]
        assert labels == ([LABELS] * 4 if threshold == 0.0 else [[]] * 4)


def test_alignment_zero_shot_and_embeddings(root, tmp_path, capsys):
    rows = [{"id": "x", "photo": "img0.png"}, {"id": "y", "photo": "img1.png", "label": "dog"}]
    manifest = write_jsonl(root / "align.jsonl", rows)
    out = tmp_path / "zs.jsonl"
    assert main(["predict", str(root / "aligner"), "--data", str(manifest), "--out", str(out)]) == 0
    assert "alignment predictions" in capsys.readouterr().out
    predictor = Predictor(root / "aligner")
    for row, want in zip(read_predictions(out), one_by_one(predictor, root, rows)):
        assert list(row["probabilities"]) == LABELS and row["label"] == want.label
        assert row["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    # --embed: unit-norm embeddings of each given input, equal to Predictor.embed (texts are fine here)
    rows.append({"id": "z", "caption": "a bird"})
    out = tmp_path / "emb.jsonl"
    assert main(["predict", str(root / "aligner"), "--data", str(write_jsonl(root / "align2.jsonl", rows)),
                 "--out", str(out), "--embed"]) == 0
    written = {row["id"]: row for row in read_predictions(out)}
    assert set(written["x"]["embeddings"]) == {"photo"} and set(written["z"]["embeddings"]) == {"caption"}
    want = predictor.embed(caption="a bird")["caption"]
    assert written["z"]["embeddings"]["caption"] == pytest.approx(want.tolist(), abs=1e-6)
    assert math.sqrt(sum(x * x for x in written["x"]["embeddings"]["photo"])) == pytest.approx(1.0, abs=1e-5)


def test_alignment_text_row_is_refused_or_skipped(root, tmp_path, capsys):
    rows = [{"id": "x", "photo": "img0.png"}, {"id": "t", "caption": "a cat"}]
    manifest = write_jsonl(root / "align_text.jsonl", rows)
    out = tmp_path / "p.jsonl"
    with pytest.raises(PredictionError, match=r"align_text\.jsonl row 2 \(id 't'\): an alignment model .* zero-shot"):
        predict_manifest(Predictor(root / "aligner"), manifest, out)
    assert not out.exists()
    assert main(["predict", str(root / "aligner"), "--data", str(manifest), "--out", str(out),
                 "--on-error", "skip"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "skipped 1 of 2 rows" in err and "row 2 (id 't')" in err
    assert [row["id"] for row in read_predictions(out)] == ["x"]


@pytest.mark.parametrize("bad, message", [
    ({"id": "m", "photo": "missing.png"}, r"row 2 \(id 'm'\): photo: .*missing\.png"),
    ({"id": "k", "photo": "broken.png"}, r"row 2 \(id 'k'\): photo: "),
    ({"id": "L", "photo": "large.png"}, r"row 2 \(id 'L'\): photo: .*max_pixels"),
    ({"id": "e", "photo": "", "caption": ""}, r"row 2 \(id 'e'\): has none of the modalities"),
    ({"id": "a", "photo": "img1.png"}, r"row 2: duplicate id 'a', already used by .*bad\.jsonl row 1"),
])
def test_a_bad_row_raises_naming_file_row_and_field_or_is_skipped(root, tmp_path, bad, message, capsys):
    manifest = write_jsonl(root / "bad.jsonl", [ROWS[0], bad, ROWS[3]])
    out = tmp_path / "p.jsonl"
    out.write_text("earlier predictions\n")  # a failed run leaves an existing file as it was (atomic write)
    with pytest.raises(DataError, match=message):
        predict_manifest(Predictor(root / "classifier"), manifest, out)
    assert out.read_text() == "earlier predictions\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]
    args = ["predict", str(root / "classifier"), "--data", str(manifest), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl row 2" in err and "Traceback" not in err
    assert main(args + ["--on-error", "skip"]) == 0
    assert [row["id"] for row in read_predictions(out)] == ["a", "d"]
    assert "skipped 1 of 3 rows" in capsys.readouterr().err


def test_manifest_level_errors(root, tmp_path, capsys):
    predictor = Predictor(root / "classifier")
    with pytest.raises(DataError, match=r"no column holds one of the model's modalities \(expected 'photo', "
                                        r"'caption'\); columns found: id, audio"):
        predict_manifest(predictor, write_jsonl(root / "nocols.jsonl", [{"id": 1, "audio": "x.wav"}]), tmp_path / "o")
    all_bad = write_jsonl(root / "allbad.jsonl", [{"photo": "missing.png"}])
    with pytest.raises(DataError, match=r"no usable rows left \(1 skipped\); first problem: .*missing\.png"):
        predict_manifest(predictor, all_bad, tmp_path / "o", on_error="skip")
    with pytest.raises(DataError, match="does not exist"):
        predict_manifest(predictor, root / "nowhere.jsonl", tmp_path / "o")
    with pytest.raises(ValueError, match="on_error"):
        predict_manifest(predictor, all_bad, tmp_path / "o", on_error="ignore")
    manifest = write_jsonl(root / "self.jsonl", ROWS)
    with pytest.raises(ValueError, match="is the manifest itself"):
        predict_manifest(predictor, manifest, manifest)
    with pytest.raises(PredictionError, match="embed needs an alignment model"):
        predict_manifest(predictor, manifest, tmp_path / "o", embed=True)
    assert not (tmp_path / "o").exists()
    model = str(root / "classifier")
    for args, text in ((["--data", str(manifest)], "--data needs --out FILE"),
                       (["--data", str(manifest), "--out", "x.jsonl", "--image", "a.png"], "drop --image"),
                       (["--image", str(root / "img0.png"), "--out", "x.jsonl"], "--out goes with --data")):
        assert main(["predict", model, *args]) == 2
        assert text in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- the task's predictions


def test_task_predict_is_what_the_predictor_returns(root):
    predictor = Predictor(root / "classifier")
    samples = [{"photo": str(root / "img0.png"), "caption": "a cat"}, {"caption": "only a text"}]
    batch = predictor.make_batch(samples)
    direct = get_task("classification").predict(predictor.model, batch)
    via_predictor = predictor.predict_batch(samples)
    assert all(isinstance(p, Prediction) for p in direct) and direct[1].modalities == ["caption"]
    for a, b in zip(direct, via_predictor):
        assert a.label == b.label and a.probabilities == pytest.approx(b.probabilities, abs=1e-7)
    # the probabilities are the head's softmax of the model's logits
    with torch.no_grad():
        want = predictor.model(batch).logits.softmax(-1)
    assert [direct[0].probabilities[c] for c in LABELS] == pytest.approx(want[0].tolist(), abs=1e-6)


def test_predictor_dispatches_on_the_recorded_task(root):
    classifier_predictor, ensemble, aligner = (Predictor(root / n) for n in ("classifier", "ensemble", "aligner"))
    assert (classifier_predictor.task_name, classifier_predictor.head_task) == ("classification", "multiclass")
    assert ensemble.task_name == "classification" and not ensemble.is_alignment and not ensemble.can_embed
    assert aligner.task_name == "alignment" and aligner.is_alignment and aligner.can_embed
    assert aligner.head_task is None and aligner.labels == LABELS
    assert task_of(aligner.model) is not task_of(classifier_predictor.model)
    with pytest.raises(PredictionError, match="--classes / --template .* apply to alignment models"):
        Predictor(root / "classifier", classnames=["x", "y"])
    embedded = aligner.predict_processed(aligner.make_batch([{"caption": "a cat"}]), embed=True)
    assert isinstance(embedded[0], EmbeddingPrediction) and embedded[0].modalities == ["caption"]


def test_cli_predict_embed_single_sample(root, capsys):
    assert main(["predict", str(root / "aligner"), "--text", "a cat", "--embed"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["embeddings"]) == ["caption"] and len(printed["embeddings"]["caption"]) == 16
    assert main(["predict", str(root / "classifier"), "--text", "a cat", "--embed"]) == 2
    assert "embed needs an alignment model" in capsys.readouterr().err


def test_onnx_manifest_task_and_older_exports():
    assert manifest_tasks({"task": "classification", "head_task": "binary"}) == ("classification", "binary")
    assert manifest_tasks({"task": "alignment", "head_task": None}) == ("alignment", None)
    # exports written before the manifest recorded the task: the head task (or "alignment") stood in "task"
    assert manifest_tasks({"task": "multilabel", "architecture": "MultimodalModel"}) == ("classification",
                                                                                        "multilabel")
    assert manifest_tasks({"task": "alignment", "architecture": "AlignmentModel"}) == ("alignment", None)


def test_predict_data_with_the_onnx_backend_equals_torch(root, tmp_path):
    pytest.importorskip("onnxruntime")
    from polymodal.inference.export import OnnxPredictor, export_onnx

    export_onnx(root / "classifier", tmp_path / "onnx")
    onnx_predictor = OnnxPredictor(tmp_path / "onnx")
    assert (onnx_predictor.task_name, onnx_predictor.head_task) == ("classification", "multiclass")
    manifest = write_jsonl(root / "onnx_rows.jsonl", ROWS)
    assert main(["predict", str(tmp_path / "onnx"), "--backend", "onnx", "--data", str(manifest),
                 "--out", str(tmp_path / "onnx.jsonl")]) == 0
    predict_manifest(Predictor(root / "classifier"), manifest, tmp_path / "torch.jsonl")
    for a, b in zip(read_predictions(tmp_path / "onnx.jsonl"), read_predictions(tmp_path / "torch.jsonl")):
        assert a["id"] == b["id"] and a["label"] == b["label"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
