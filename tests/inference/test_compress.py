"""Dynamic int8 quantization: a loadable, pickle-free int8 directory that OnnxPredictor runs, smaller on disk,
with test accuracy within 1 point of fp32 on a small model trained here on the built-in spoken digits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from polymodal.config import ModelConfig, from_dict  # noqa: E402
from polymodal.inference.compress import directory_bytes, quantize_dynamic_torch, quantize_int8  # noqa: E402
from polymodal.inference.export import ExportError, OnnxPredictor, read_manifest  # noqa: E402
from polymodal.inference.export.inputs import make_batch  # noqa: E402
from polymodal.inference.export.parity import builtin_samples  # noqa: E402
from polymodal.inference.export.runtime import OnnxModel  # noqa: E402
from polymodal.models import MultimodalModel  # noqa: E402

pytestmark = pytest.mark.slow  # trains a small model for a few seconds (module fixture)

KINDS = {"image": "image", "audio": "audio"}
MODALITIES = {
    "image": {"kind": "image", "encoder": "image_vit",
              "options": {"dim": 64, "depth": 2, "heads": 4, "patch_size": 2, "dropout": 0.0},
              "processor": {"image_size": 8, "channels": 1, "mean": [0.3], "std": [0.4]}},
    "audio": {"kind": "audio", "encoder": "audio_transformer", "options": {"dim": 64, "depth": 2, "heads": 4, "dropout": 0.0},
              "processor": {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 20, "max_seconds": 1.0}},
}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small image + audio classifier trained for a few seconds (fixed seed) and its processed test split."""
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"modalities": MODALITIES, "fusion": {"name": "concat", "dim": 64},
                                     "head": {"labels": [str(d) for d in range(10)]}})
    model = MultimodalModel(config)
    from polymodal.data import get_dataset

    data = get_dataset("spoken-digits")
    train_rows, test_rows = data.records("train"), data.records("test")  # all 2000 (rows are ordered by digit)
    train = make_batch(model.processors, list(KINDS), builtin_samples(KINDS, len(train_rows), "train"))
    train_labels = torch.tensor([int(r["label"]) for r in train_rows])
    epochs, batch_size, lr = 3, 32, 3e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(train_labels) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(len(train_labels))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = type(train)(inputs={m: {k: v[rows] for k, v in d.items()} for m, d in train.inputs.items()},
                                present={m: p[rows] for m, p in train.present.items()})
            loss = F.cross_entropy(model(batch).logits, train_labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    directory = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(directory)
    test = make_batch(model.processors, list(KINDS), builtin_samples(KINDS, len(test_rows), "test"))
    return model, directory, test, torch.tensor([int(r["label"]) for r in test_rows])


def test_int8_directory_is_smaller_and_within_one_point_of_fp32(trained, tmp_path):
    model, model_dir, test, labels = trained
    report = quantize_int8(model_dir, tmp_path / "int8")
    out = tmp_path / "int8"
    manifest = read_manifest(out)
    assert manifest["precision"] == "int8" and manifest["quantization"]["op_types"] == ["MatMul", "Gemm"]
    assert sorted(p.name for p in out.iterdir()) == ["classifier.onnx", "manifest.json", "processors.json"]
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))  # never pickle

    # size on disk: smaller than the fp32 model directory and than the fp32 graph
    assert report["bytes"] == directory_bytes(out) < report["model_bytes"] == directory_bytes(model_dir)
    graph = report["graphs"]["classifier"]
    assert graph["bytes"] < 0.6 * graph["fp32_bytes"]

    with torch.no_grad():
        fp32 = accuracy(model(test).logits, labels)
        torch_int8 = accuracy(quantize_dynamic_torch(model)(test).logits, labels)
    onnx_int8 = accuracy(OnnxModel(out)(test).logits, labels)
    assert fp32 > 0.8  # it learned (chance is 0.1), so the comparison means something
    assert abs(onnx_int8 - fp32) <= 0.01, (fp32, onnx_int8)
    assert abs(torch_int8 - fp32) <= 0.01, (fp32, torch_int8)
    print(json.dumps({"fp32": fp32, "onnx_int8": onnx_int8, "torch_int8": torch_int8, **report}))


def test_int8_directory_predicts_like_the_fp32_model(trained, tmp_path):
    model, model_dir, _, _ = trained
    quantize_int8(model, tmp_path / "int8")
    from polymodal.inference import Predictor

    samples = builtin_samples(KINDS, 6, "val")
    samples[2]["audio"] = None
    want = Predictor(model_dir).predict_batch(samples)
    got = OnnxPredictor(tmp_path / "int8").predict_batch(samples)
    assert [p.modalities for p in got] == [p.modalities for p in want]
    for a, b in zip(want, got):
        assert abs(sum(b.probabilities.values()) - 1) < 1e-5
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 0.05


def test_quantize_dynamic_torch_replaces_linears_and_leaves_the_model_alone(trained):
    model = trained[0]
    quantized = quantize_dynamic_torch(model)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert linears > 0 and sum(isinstance(m, dynamic_linear) for m in quantized.modules()) == linears
    assert sum(isinstance(m, torch.nn.Linear) for m in quantized.modules()) == 0
    assert not any(isinstance(m, dynamic_linear) for m in model.modules())  # the original is untouched


def test_out_dir_is_refused_when_it_holds_something_else(trained, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(ExportError, match="not a polymodal export"):
        quantize_int8(trained[1], tmp_path / "busy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


# ---------------------------------------------------------------------------------------------- distillation


def test_soft_target_loss_is_hintons_formula():
    from polymodal.inference.compress import soft_target_loss_sum

    torch.manual_seed(1)
    student, teacher, t = torch.randn(4, 5), torch.randn(4, 5) * 3, 2.5
    p_t, p_s = torch.softmax(teacher / t, -1), torch.softmax(student / t, -1)
    expected = t * t * (p_t * (p_t.log() - p_s.log())).sum()
    torch.testing.assert_close(soft_target_loss_sum(student, teacher, "multiclass", t), expected)
    assert float(soft_target_loss_sum(teacher, teacher, "multiclass", t)) == pytest.approx(0.0, abs=1e-6)
    # multilabel: BCE against the teacher's tempered sigmoid, mean over labels, × T²
    q_t, q_s = torch.sigmoid(teacher / t), torch.sigmoid(student / t)
    bce = -(q_t * q_s.log() + (1 - q_t) * (1 - q_s).log()).mean(-1).sum() * t * t
    torch.testing.assert_close(soft_target_loss_sum(student, teacher, "multilabel", t), bce)


def test_distill_trains_a_smaller_student_with_the_trainer(trained, tmp_path):
    from polymodal.inference import Predictor
    from polymodal.inference.compress import distill

    # an image-only conv student: a subset of the teacher's modalities is allowed
    student = {"modalities": {"image": {"encoder": "image_cnn", "options": {"channels": [16, 32]}}},
               "fusion": {"name": "concat", "dim": 32}}
    summary = distill(trained[1], student, tmp_path / "run", data={"name": "spoken-digits", "batch_size": 32,
                                                                    "limit": 1000},
                      train={"epochs": 3, "lr": 3e-3, "seed": 0}, temperature=2.0, alpha=0.7)
    assert summary["student"]["parameters"]["total"] < summary["teacher"]["parameters"]["total"] / 2
    assert summary["teacher"]["test"]["accuracy"] > 0.8
    assert summary["student"]["test"]["accuracy"] > 0.4, summary["student"]["test"]["accuracy"]  # chance: 0.1
    best = tmp_path / "run" / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["model"]["modalities"]["image"]["processor"] == MODALITIES["image"]["processor"]  # the teacher's
    assert config["model"]["head"]["labels"] == [str(d) for d in range(10)]
    prediction = Predictor(best).predict(image=builtin_samples({"image": "image"}, 1)[0]["image"])
    assert prediction.label in [str(d) for d in range(10)] and prediction.modalities == ["image"]


def test_student_config_takes_the_teachers_inputs_and_refuses_others(trained):
    from polymodal.config import ConfigError
    from polymodal.inference.compress import student_config

    teacher = trained[0]
    spec = student_config(teacher, {"modalities": {"audio": {"encoder": "audio_cnn"}}})
    assert list(spec["modalities"]) == ["audio"]
    assert spec["modalities"]["audio"]["processor"] == MODALITIES["audio"]["processor"]
    assert spec["head"]["labels"] == teacher.labels
    assert list(student_config(teacher, {})["modalities"]) == ["image", "audio"]
    with pytest.raises(ConfigError, match=r"student.modalities: \['text'\] are not modalities of the teacher"):
        student_config(teacher, {"modalities": {"text": {}}})
    with pytest.raises(ConfigError, match=r"student.modalities.image.processor: a student takes the teacher's"):
        student_config(teacher, {"modalities": {"image": {"processor": {"image_size": 32}}}})
