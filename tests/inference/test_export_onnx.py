"""ONNX export: graphs + manifest + processor settings, OnnxPredictor == Predictor on real built-in inputs, parity
≤ 1e-4 for every registered fusion (+ late) and encoder preset, atomic writes and clear errors."""

from __future__ import annotations

import json
import re
import sys
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from polymodal.errors import PolymodalError  # noqa: E402
from polymodal.inference import Predictor  # noqa: E402
from polymodal.inference.export import ExportError, OnnxPredictor, export_onnx, read_manifest  # noqa: E402
from polymodal.inference.export.parity import (  # noqa: E402
    build_tiny_model,
    builtin_samples,
    compare,
    parity_cases,
    parity_row,
    tiny_modality,
)
from polymodal.types import FusedOutput  # noqa: E402

ATOL = 1e-4
KINDS = {"image": "image", "audio": "audio", "text": "text"}


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    model = build_tiny_model({"image": tiny_modality("image_cnn"), "audio": tiny_modality("audio_transformer"),
                              "text": tiny_modality("text_transformer")}, fusion="gated")
    directory = tmp_path_factory.mktemp("model")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def export_dir(classifier_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "onnx"
    report = export_onnx(classifier_dir, out)
    return out, report


def test_export_writes_graph_manifest_and_processor_settings(export_dir):
    out, report = export_dir
    assert sorted(p.name for p in out.iterdir()) == ["classifier.onnx", "manifest.json", "processors.json"]
    assert report["graphs"]["classifier"]["max_abs_diff"] <= ATOL
    assert report["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    manifest = read_manifest(out)
    assert manifest["labels"] == [str(d) for d in range(10)]
    assert manifest["task"] == "classification" and manifest["head_task"] == "multiclass"
    assert manifest["opset"] == 17 and manifest["precision"] == "fp32"
    inputs = {i["name"]: i for i in manifest["graphs"]["classifier"]["inputs"]}
    assert list(inputs) == ["image.pixel_values", "image.present", "audio.features", "audio.feature_mask",
                            "audio.present", "text.input_ids", "text.attention_mask", "text.present"]
    assert inputs["image.pixel_values"]["shape"] == ["batch", 1, 16, 16]  # images: fixed size after the processor
    assert inputs["audio.features"]["shape"] == ["batch", 16, "audio_length"]  # time axis dynamic
    assert inputs["text.input_ids"]["shape"] == ["batch", "text_length"] and inputs["text.present"]["dtype"] == "bool"
    assert manifest["graphs"]["classifier"]["outputs"][0]["shape"] == ["batch", 10]

    import onnx

    graph = onnx.load(str(out / "classifier.onnx")).graph
    assert [i.name for i in graph.input] == list(inputs)
    assert [o.name for o in graph.output] == ["logits"]


def test_processor_settings_let_a_runtime_without_polymodal_preprocess(export_dir, classifier_dir):
    """Re-implement the built-in text tokenizer and the image normalisation from processors.json alone."""
    out, _ = export_dir
    settings = json.loads((out / "processors.json").read_text())
    processors = Predictor(classifier_dir).model.processors

    text = settings["text"]
    vocab, length, special = text["resolved"]["vocab_size"], text["resolved"]["max_length"], text["special_ids"]
    sentence = "Someone says SEVEN, twice!"
    words = re.findall(r"\w+|[^\w\s]", sentence.lower())
    ids = [special["cls"], *[4 + zlib.crc32(w.encode()) % (vocab - 4) for w in words][: length - 2], special["sep"]]
    assert ids == processors["text"](sentence)["input_ids"].tolist()

    image = settings["image"]["resolved"]
    assert image["image_size"] == 16 and image["channels"] == 1 and image["mean"] == [0.5] and image["std"] == [0.5]
    from PIL import Image

    digit = builtin_samples({"image": "image"}, 1)[0]["image"]
    resized = np.asarray(Image.fromarray(digit).resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (resized * image["value_scale"] - image["mean"][0]) / image["std"][0]
    np.testing.assert_allclose(processors["image"](digit)["pixel_values"][0].numpy(), expected, atol=1e-6)

    audio = settings["audio"]
    assert audio["resolved"]["sample_rate"] == 8000 and audio["resolved"]["num_frames"] is None
    assert audio["empty"]["feature_mask"] == {"shape": [1], "fill": False}


def test_onnx_predictor_matches_predictor_on_builtin_inputs(export_dir, classifier_dir):
    out, _ = export_dir
    torch_predictor, onnx_predictor = Predictor(classifier_dir), OnnxPredictor(out)
    samples = builtin_samples(KINDS, 4)
    samples[1] = {"image": samples[1]["image"]}  # image only
    samples[2]["audio"] = None  # audio missing
    samples[3] = {"text": samples[3]["text"], "audio": samples[3]["audio"]}
    for batch in (samples, samples[:1], [samples[1]]):  # batch 4, batch 1 (all modalities), batch 1 (image only)
        expected, got = torch_predictor.predict_batch(batch), onnx_predictor.predict_batch(batch)
        assert [p.label for p in got] == [p.label for p in expected]
        assert [p.modalities for p in got] == [p.modalities for p in expected]
        for want, have in zip(expected, got):
            assert list(have.probabilities) == list(want.probabilities)
            assert max(abs(have.probabilities[k] - want.probabilities[k]) for k in want.probabilities) < 1e-5
    single = onnx_predictor.predict(image=samples[0]["image"], text="a handwritten seven")
    assert single.modalities == ["image", "text"] and abs(sum(single.probabilities.values()) - 1) < 1e-5


def test_compare_reports_parity_for_batch_one_many_and_missing(export_dir, classifier_dir):
    out, _ = export_dir
    result = compare(Predictor(classifier_dir).model, out)
    sets = result["per_graph"]["classifier"]
    assert set(sets) == {"batch 1", "batch 5", "batch 5, one modality missing per sample"}
    assert result["max_abs_diff"] <= ATOL


@pytest.mark.slow  # ~1 s per case, 19 cases
@pytest.mark.parametrize("case", parity_cases(), ids=lambda case: case["name"])
def test_parity_of_every_fusion_and_encoder_preset(case, tmp_path):
    row = parity_row(**case, work_dir=tmp_path)
    assert row["exported"], row["why"]
    assert row["max_abs_diff"] <= ATOL, row
    assert row["ok"]


def test_parity_cases_cover_every_registered_fusion_and_encoder_preset():
    from polymodal.encoders import preset_names
    from polymodal.registry import FUSIONS

    names = {case["name"] for case in parity_cases()}
    assert {f"fusion {f}" for f in [*FUSIONS.names(), "late"]} <= names
    assert {f"encoder {e}" for e in preset_names()} <= names


def test_alignment_export_gives_the_same_embeddings_and_zero_shot_labels(tmp_path):
    model = build_tiny_model({"image": tiny_modality("image_cnn"), "text": tiny_modality("text_transformer")},
                             alignment=True)
    model.zeroshot = {"classnames": ["zero", "one", "two"], "templates": {"image": ["a handwritten {}"]}}
    model.save_pretrained(tmp_path / "model")
    report = export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert sorted(report["graphs"]) == ["image", "text"]
    manifest = read_manifest(tmp_path / "onnx")
    assert manifest["graphs"]["image"]["outputs"][0]["shape"] == ["batch", 16]
    assert manifest["alignment"]["logit_scale"] == pytest.approx(float(model.logit_scale.detach()))

    torch_predictor, onnx_predictor = Predictor(tmp_path / "model"), OnnxPredictor(tmp_path / "onnx")
    samples = builtin_samples({"image": "image", "text": "text"}, 3)
    samples[1]["text"] = None
    want, got = torch_predictor.embed_batch(samples), onnx_predictor.embed_batch(samples)
    assert set(got) == {"image", "text"}
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=ATOL, rtol=0)
    assert float(got["text"][1].abs().sum()) == 0.0  # the absent text embeds to zeros
    images = [{"image": s["image"]} for s in samples]
    assert [p.label for p in onnx_predictor.predict_batch(images)] == [
        p.label for p in torch_predictor.predict_batch(images)]


class _BatchSizeBranch(torch.nn.Module):
    """A fusion whose Python code branches on the batch size: the tracer fixes the branch it saw."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.output_dim = inner.output_dim

    def forward(self, outputs):
        fused = self.inner(outputs)
        if fused.pooled.shape[0] == 2:  # the traced batch has 2 samples
            return FusedOutput(pooled=fused.pooled + 1.0)
        return fused


def test_a_part_the_tracer_cannot_keep_is_refused_naming_it(tmp_path):
    model = build_tiny_model({"image": tiny_modality("image_cnn"), "text": tiny_modality("text_transformer")})
    model.fusion = _BatchSizeBranch(model.fusion)
    with pytest.raises(ExportError, match=r"classifier graph \(image=image_cnn, text=text_transformer, "
                                          r"fusion=concat\).*differs from PyTorch.*data-dependent"):
        export_onnx(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp folder left behind


def test_an_exporter_failure_is_an_export_error_and_writes_nothing(tmp_path, monkeypatch):
    model = build_tiny_model({"image": tiny_modality("image_cnn"), "audio": tiny_modality("audio_cnn")})

    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 17 is not supported.")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=r"classifier graph \(image=image_cnn, audio=audio_cnn, fusion=concat\) "
                                          r"cannot be exported to ONNX \(opset 17\): RuntimeError: .*aten::fancy"):
        export_onnx(model, tmp_path / "onnx")
    assert list(tmp_path.iterdir()) == []


def test_out_dir_rules_and_atomic_replace(classifier_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a polymodal export"):
        export_onnx(classifier_dir, other)
    assert (other / "notes.txt").read_text() == "keep me"

    out = tmp_path / "onnx"
    export_onnx(classifier_dir, out, verify=False)
    first = (out / "classifier.onnx").read_bytes()
    with pytest.raises(ExportError, match="already holds an export.*overwrite"):
        export_onnx(classifier_dir, out)
    report = export_onnx(classifier_dir, out, overwrite=True)
    assert (out / "classifier.onnx").read_bytes() == first  # same model, same graph
    assert report["graphs"]["classifier"]["max_abs_diff"] <= ATOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx", "other"]  # no temp / old folders left


def test_errors_for_a_missing_model_a_non_export_and_missing_packages(classifier_dir, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="neither a model directory"):
        export_onnx(tmp_path / "nowhere", tmp_path / "onnx")
    with pytest.raises(ExportError, match=r"not an ONNX export: manifest.json not found \(it is a model directory: "
                                          r"export it first"):
        OnnxPredictor(classifier_dir)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"onnxruntime is missing.*pip install 'polymodal\[export\]'") as info:
        export_onnx(classifier_dir, tmp_path / "onnx")
    assert isinstance(info.value, PolymodalError)


def test_hugging_face_text_encoder_exports_with_its_tokenizer_files(tmp_path):
    """An HF-backed modality: the tokenizer travels to hf/<name>/ (no weights), OnnxPredictor rebuilds it."""
    from hf_fixtures import tiny_hf_model_dir

    text = {"kind": "text", "encoder": "hf", "pretrained": str(tiny_hf_model_dir("bert")),
            "processor": {"max_length": 16}}
    model = build_tiny_model({"image": tiny_modality("image_cnn"), "text": text})
    model.save_pretrained(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "onnx")
    copied = {p.name for p in (tmp_path / "onnx" / "hf" / "text").iterdir()}
    assert "config.json" in copied and any(name.startswith(("vocab", "tokenizer")) for name in copied)
    assert not any(name.endswith((".safetensors", ".bin")) for name in copied)
    assert read_manifest(tmp_path / "onnx")["modalities"]["text"]["pretrained"] == "hf/text"

    samples = builtin_samples({"image": "image", "text": "text"}, 3)
    samples[0]["image"] = None
    want = Predictor(tmp_path / "model").predict_batch(samples)
    got = OnnxPredictor(tmp_path / "onnx").predict_batch(samples)
    assert [p.label for p in got] == [p.label for p in want]
    for a, b in zip(want, got):
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-5


def test_a_model_that_fails_in_pytorch_is_not_blamed_on_onnx(tmp_path):
    model = build_tiny_model({"image": tiny_modality("image_cnn"), "text": tiny_modality("text_transformer")})
    model.encoders["image"].in_channels = 3  # the processor gives 1-channel images: the encoder now refuses them
    with pytest.raises(ExportError, match=r"fails in PyTorch on its processors' inputs.*pixel_values \[B, 3, H, W\]"):
        export_onnx(model, tmp_path / "onnx")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_export_files_get_the_modes_of_the_umask(classifier_dir, tmp_path, umask, file_mode, dir_mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        export_onnx(classifier_dir, tmp_path / "onnx", verify=False)
    finally:
        os.umask(old)
    entries = [tmp_path / "onnx", *(tmp_path / "onnx").rglob("*")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in entries}
    assert modes == {p.name: dir_mode if p.is_dir() else file_mode for p in entries}
