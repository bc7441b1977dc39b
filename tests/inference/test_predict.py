"""Predictor and `polymodal predict` on raw files: same numbers as the data pipeline + model forward, any subset
of modalities, clear errors for bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.cli import main
from polymodal.config import Config, ModelConfig, from_dict
from polymodal.data import DataError, build_dataloaders
from polymodal.inference import Prediction, Predictor
from polymodal.models import MultimodalModel

LABELS = ["bird", "cat", "dog"]
# Modality names differ from the kinds on purpose: --image / --audio / --text must still find them.
MODALITIES = {
    "photo": {"kind": "image", "processor": {"image_size": 16, "channels": 1, "max_pixels": 20_000}},
    "voice": {"kind": "audio", "processor": {"sample_rate": 8000, "max_seconds": 0.5, "max_seconds_file": 3.0,
                                             "n_mels": 16, "n_fft": 256, "hop_length": 80}},
    "caption": {"kind": "text", "processor": {"max_length": 12, "vocab_size": 512}},
}


def model_config(task="multiclass", labels=LABELS, fusion="gated", modalities=MODALITIES) -> ModelConfig:
    return from_dict(ModelConfig, {"modalities": modalities, "fusion": {"name": fusion, "dim": 16},
                                   "head": {"task": task, "labels": list(labels)}})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        sf.write(root / f"clip{i}.wav", (rng.standard_normal(3000 + 1000 * i) * 0.2).astype(np.float32), 8000,
                 subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = MultimodalModel(model_config())
    directory = tmp_path_factory.mktemp("model")
    model.save_pretrained(directory)
    return directory


def manifest_logits(model_dir, rows, root):
    """Logits of the saved model on rows read through the manifest → DataLoader path (the training path)."""
    model = MultimodalModel.from_pretrained(model_dir)
    manifest = root / "rows.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = from_dict(Config, {"model": {"modalities": MODALITIES, "head": {"labels": LABELS}},
                                "data": {"test": str(manifest)}})
    loaders, _ = build_dataloaders(config, model.processors, splits=("test",))
    batch = next(iter(loaders["test"]))
    with torch.no_grad():
        return model(batch).logits


def test_prediction_equals_the_model_on_the_processed_batch(model_dir, files):
    rows = [
        {"id": "full", "photo": "img0.png", "voice": "clip0.wav", "caption": "a small bird", "label": "bird"},
        {"id": "photo-only", "photo": "img1.png", "voice": "", "caption": "", "label": "cat"},
        {"id": "voice+text", "photo": None, "voice": "clip2.wav", "caption": "a dog barks", "label": "dog"},
        {"id": "text-only", "caption": "cat", "label": "cat"},
    ]
    expected = torch.softmax(manifest_logits(model_dir, rows, files), dim=-1)
    predictor = Predictor(model_dir)
    samples = [
        {"image": files / "img0.png", "audio": str(files / "clip0.wav"), "text": "a small bird"},
        {"photo": str(files / "img1.png")},
        {"voice": str(files / "clip2.wav"), "caption": "a dog barks", "photo": None},
        {"text": "cat", "audio": ""},
    ]
    used = [["photo", "voice", "caption"], ["photo"], ["voice", "caption"], ["caption"]]
    batch_predictions = predictor.predict_batch(samples)
    for i, sample in enumerate(samples):
        prediction = predictor.predict(sample)
        assert isinstance(prediction, Prediction)
        probs = torch.tensor([prediction.probabilities[label] for label in LABELS])
        torch.testing.assert_close(probs, expected[i], atol=1e-6, rtol=0)
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6
        assert prediction.label == LABELS[int(expected[i].argmax())]
        assert prediction.modalities == used[i]
        assert batch_predictions[i].label == prediction.label
        for label in LABELS:  # batching pads audio / text: the numbers must not move
            assert abs(batch_predictions[i].probabilities[label] - prediction.probabilities[label]) < 1e-6
        top = prediction.top(2)
        assert len(top) == 2 and top[0][0] == prediction.label and top[0][1] >= top[1][1]


def test_raw_arrays_and_pil_images_match_files(model_dir, files):
    predictor = Predictor(model_dir)
    from_files = predictor.predict(image=str(files / "img0.png"), audio=str(files / "clip0.wav"))
    wave, rate = sf.read(files / "clip0.wav", dtype="int16")
    from_memory = predictor.predict(image=Image.open(files / "img0.png"), audio=(wave, rate))
    for label in LABELS:
        assert abs(from_files.probabilities[label] - from_memory.probabilities[label]) < 1e-6


@pytest.mark.parametrize(
    "inputs,message",
    [
        ({"image": "img-corrupt.png"}, r"photo: image file '.*img-corrupt\.png' is not a readable image"),
        ({"image": "img-huge.png"}, r"photo: image file '.*img-huge\.png' has 200×200 = 40,000 pixels, over the cap"),
        ({"audio": "long.wav"}, r"voice: audio file '.*long\.wav' lasts 4\.0 s, over the cap max_seconds_file=3\.0"),
        ({"audio": "missing.wav"}, r"voice: audio file '.*missing\.wav' does not exist"),
        ({"text": 42}, r"caption: text input must be a string, got int"),
    ],
    ids=["corrupt-image", "oversized-image", "too-long-audio", "missing-audio", "text-not-string"],
)
def test_bad_inputs_raise_clear_errors(model_dir, files, inputs, message):
    (files / "img-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (200, 200)).save(files / "img-huge.png")
    sf.write(files / "long.wav", np.zeros(32000, dtype=np.float32), 8000)
    inputs = {k: str(files / v) if isinstance(v, str) else v for k, v in inputs.items()}
    with pytest.raises(DataError, match=message):
        Predictor(model_dir).predict(**inputs)


def test_unknown_modality_empty_sample_and_not_a_model_dir(model_dir, tmp_path):
    predictor = Predictor(model_dir)
    with pytest.raises(ValueError, match=r"unknown modality 'depth': this model takes \['photo', 'voice', 'caption'\]"):
        predictor.predict(depth="x.png")
    with pytest.raises(ValueError, match="needs at least one of the model's modalities"):
        predictor.predict(text="  ", photo=None)
    with pytest.raises(ValueError, match="given twice"):
        predictor.predict(text="a", caption="b")
    with pytest.raises(FileNotFoundError, match="neither a model directory"):
        Predictor(tmp_path)


def test_multilabel_and_binary_predictions(files, tmp_path):
    text_only = {"caption": MODALITIES["caption"]}
    torch.manual_seed(1)
    multi = MultimodalModel(model_config("multilabel", ["red", "round", "small"], "concat", text_only))
    multi.save_pretrained(tmp_path / "multi")
    prediction = Predictor(tmp_path / "multi", threshold=0.5).predict(text="a small red ball")
    assert prediction.label == [lab for lab, p in prediction.probabilities.items() if p >= 0.5]
    assert all(0 < p < 1 for p in prediction.probabilities.values())
    binary = MultimodalModel(model_config("binary", ["no", "yes"], "concat", text_only))
    binary.save_pretrained(tmp_path / "binary")
    prediction = Predictor(tmp_path / "binary").predict(text="is it?")
    assert set(prediction.probabilities) == {"no", "yes"}
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)


def test_cli_predict_prints_label_and_probabilities(model_dir, files, capsys, tmp_path):
    args = ["predict", str(model_dir), "--image", str(files / "img0.png"), "--audio", str(files / "clip0.wav"),
            "--text", "a small bird"]
    expected = Predictor(model_dir).predict(image=str(files / "img0.png"), audio=str(files / "clip0.wav"),
                                            text="a small bird")
    assert main(args + ["--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["label"] == expected.label and printed["modalities"] == ["photo", "voice", "caption"]
    assert all(abs(printed["probabilities"][k] - v) < 1e-6 for k, v in expected.probabilities.items())

    assert main(args + ["--top", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"prediction: {expected.label}   (from photo, voice, caption)")
    assert len([line for line in text.splitlines() if line.startswith("  ")]) == 2

    # a run directory works too (best/ inside), and any subset of modalities via --input NAME=VALUE
    run = tmp_path / "run"
    MultimodalModel.from_pretrained(model_dir).save_pretrained(run / "best")
    assert main(["predict", str(run), "--input", "caption=a dog", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"] == ["caption"]


def test_cli_predict_errors_are_one_line(model_dir, files, capsys):
    (files / "broken.png").write_bytes(b"nope")
    assert main(["predict", str(model_dir), "--image", str(files / "broken.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polymodal predict: error: photo: image file") and "broken.png" in err
    assert "Traceback" not in err
    assert main(["predict", str(model_dir)]) == 2
    assert "give at least one input" in capsys.readouterr().err
    assert main(["predict", str(files), "--text", "hello"]) == 2
    assert "neither a model directory" in capsys.readouterr().err

