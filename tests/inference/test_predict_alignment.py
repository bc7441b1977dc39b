"""`polymodal predict` / Predictor on alignment models (zero-shot labels, embeddings), and processor overrides
(--set) for predict and eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

from polymodal.cli import main
from polymodal.config import ConfigError, ModelConfig, from_dict
from polymodal.data import DataError
from polymodal.inference import PredictionError, Predictor
from polymodal.models import AlignmentModel, MultimodalModel
from polymodal.models.aligner import AlignmentConfig

CLASSES = ["cat", "dog", "bird"]
MODALITIES = {
    "photo": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
              "processor": {"image_size": 8, "channels": 1, "max_pixels": 5000}},
    "voice": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [4, 8]},
              "processor": {"sample_rate": 8000, "max_seconds": 0.5, "n_mels": 16, "n_fft": 256, "hop_length": 80}},
    "caption": {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2}, "processor": {"vocab_size": 256}},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(root / "small.png")
    Image.fromarray(rng.integers(0, 255, (100, 100), dtype=np.uint8)).save(root / "large.png")  # 10,000 px
    sf.write(root / "clip.wav", (rng.standard_normal(3000) * 0.2).astype(np.float32), 8000, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def align_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = AlignmentModel(from_dict(AlignmentConfig, {"modalities": MODALITIES, "embed_dim": 16}))
    model.zeroshot = {"classnames": CLASSES, "templates": {"photo": ["a photo of a {}.", "a {}"],
                                                           "voice": ["someone says {}"]}}
    directory = tmp_path_factory.mktemp("align")
    model.save_pretrained(directory)
    return directory


def reference_probabilities(model, image_path, classes, templates):
    """CLIP zero-shot by hand (Radford et al. 2021): prompts → text tower → mean of unit vectors → cosine × scale."""
    proc = model.processors
    with torch.no_grad():
        pixels = proc["photo"].collate([proc["photo"](str(image_path))])
        image = F.normalize(model.projections["photo"](
            model.encoders["photo"](pixels, torch.ones(1, dtype=torch.bool)).pooled), dim=-1)
        rows = []
        for name in classes:
            texts = proc["caption"].collate([proc["caption"](t.format(name)) for t in templates])
            out = model.encoders["caption"](texts, torch.ones(len(templates), dtype=torch.bool))
            rows.append(F.normalize(F.normalize(model.projections["caption"](out.pooled), dim=-1).mean(0), dim=0))
        logits = model.logit_scale.exp() * image @ torch.stack(rows).T
    return logits.softmax(-1)[0].tolist()


def test_zero_shot_label_matches_clip_by_hand(align_dir, files):
    predictor = Predictor(align_dir)
    assert predictor.is_alignment and predictor.labels == CLASSES
    prediction = predictor.predict(image=str(files / "small.png"))
    expected = reference_probabilities(predictor.model, files / "small.png", CLASSES, ["a photo of a {}.", "a {}"])
    assert list(prediction.probabilities) == CLASSES and prediction.modalities == ["photo"]
    assert [prediction.probabilities[c] for c in CLASSES] == pytest.approx(expected, abs=1e-5)
    assert prediction.label == CLASSES[int(np.argmax(expected))]
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_image_and_audio_average_and_batches(align_dir, files):
    predictor = Predictor(align_dir)
    image = predictor.predict(photo=str(files / "small.png"))
    audio = predictor.predict(audio=str(files / "clip.wav"))
    both = predictor.predict(image=str(files / "small.png"), audio=str(files / "clip.wav"))
    assert both.modalities == ["photo", "voice"]
    for c in CLASSES:
        assert both.probabilities[c] == pytest.approx((image.probabilities[c] + audio.probabilities[c]) / 2, abs=1e-5)
    batch = predictor.predict_batch([{"image": str(files / "small.png")}, {"voice": str(files / "clip.wav")}])
    assert batch[0].probabilities == pytest.approx(image.probabilities, abs=1e-5)
    assert batch[1].probabilities == pytest.approx(audio.probabilities, abs=1e-5)


def test_classnames_and_templates_can_be_given(align_dir, files):
    predictor = Predictor(align_dir, classnames=["zero", "one"], templates=["a handwritten {}"])
    prediction = predictor.predict(image=str(files / "small.png"))
    expected = reference_probabilities(predictor.model, files / "small.png", ["zero", "one"], ["a handwritten {}"])
    assert [prediction.probabilities[c] for c in ("zero", "one")] == pytest.approx(expected, abs=1e-5)


def test_embed_gives_unit_vectors(align_dir, files):
    predictor = Predictor(align_dir)
    emb = predictor.embed(image=str(files / "small.png"), text="a photo of a cat")
    assert set(emb) == {"photo", "caption"} and emb["photo"].shape == (16,)
    assert float(emb["photo"].norm()) == pytest.approx(1.0, abs=1e-5)
    batch = predictor.embed_batch([{"text": "a cat"}, {"image": str(files / "small.png")}])
    assert batch["caption"].shape == (2, 16) and float(batch["caption"][1].abs().sum()) == 0.0  # absent → zeros


def test_refusals_say_what_the_model_can_do(align_dir, files, tmp_path):
    predictor = Predictor(align_dir)
    with pytest.raises(PredictionError, match=r"zero-shot label for audio/image inputs only.*polymodal retrieve"):
        predictor.predict(text="a cat")
    bare = AlignmentModel.from_pretrained(align_dir)
    bare.zeroshot = None
    bare.save_pretrained(tmp_path / "bare")
    unnamed = Predictor(tmp_path / "bare")
    with pytest.raises(PredictionError, match="no zero-shot class names.*--classes"):
        unnamed.predict(image=str(files / "small.png"))
    assert unnamed.embed(image=str(files / "small.png"))["photo"].shape == (16,)  # embeddings need no classes
    classifier = MultimodalModel(from_dict(ModelConfig, {"modalities": {"photo": MODALITIES["photo"]},
                                                        "fusion": {"dim": 8}, "head": {"labels": CLASSES}}))
    with pytest.raises(PredictionError, match="embed needs an alignment model"):
        Predictor(classifier).embed(image=str(files / "small.png"))


def test_cli_predict_alignment(align_dir, files, capsys):
    assert main(["predict", str(align_dir), "--image", str(files / "small.png"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["label"] in CLASSES and printed["modalities"] == ["photo"]
    assert all(math.isfinite(p) for p in printed["probabilities"].values())
    assert main(["predict", str(align_dir), "--image", str(files / "small.png"), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"prediction: {printed['label']}   (zero-shot from photo)" and len(out) == 3
    assert main(["predict", str(align_dir), "--image", str(files / "small.png"), "--classes", "zero,one", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["probabilities"]) == {"zero", "one"}
    assert main(["predict", str(align_dir), "--text", "a cat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "polymodal retrieve" in err and "Traceback" not in err


def test_processor_overrides_for_predict(align_dir, files, capsys):
    large = str(files / "large.png")  # 10,000 pixels over the saved max_pixels=5000
    with pytest.raises(DataError, match="max_pixels"):
        Predictor(align_dir).predict(image=large)
    key = "model.modalities.photo.processor.max_pixels"
    assert Predictor(align_dir, overrides=[f"{key}=2e4"]).predict(image=large).label in CLASSES
    assert main(["predict", str(align_dir), "--image", large]) == 2
    assert "max_pixels" in capsys.readouterr().err
    assert main(["predict", str(align_dir), "--image", large, "--set", f"{key}=20000"]) == 0
    for bad, message in ((["train.lr=1"], "only takes processor options"),
                         (["model.modalities.nope.processor.max_pixels=1"], "no modality 'nope'"),
                         ([f"{key}=lots"], r"model\.modalities\.photo\.processor\.max_pixels")):
        with pytest.raises(ConfigError, match=message):
            Predictor(align_dir, overrides=bad)


def test_trained_alignment_run_predicts_spoken_digit_words(tmp_path, files, capsys):
    """End to end: `polymodal train` of an image + text CLIP model on spoken digits, then predict on its run."""
    from polymodal.data.builtin.spoken_digits import WORDS

    (tmp_path / "align.yaml").write_text(f"""
task: alignment
model:
  modalities:
    image: {{kind: image, encoder: image_cnn, options: {{channels: [4, 8]}}, processor: {{image_size: 8, channels: 1}}}}
    text: {{kind: text, encoder: text_transformer, options: {{dim: 16, depth: 1, heads: 2}}}}
  embed_dim: 16
  objectives: [{{name: clip}}]
data: {{name: spoken-digits, limit: 30, batch_size: 15}}
train: {{epochs: 1, seed: 0, progress: false, out_dir: {tmp_path / 'run'}}}
""")
    assert main(["train", str(tmp_path / "align.yaml")]) == 0
    capsys.readouterr()
    saved = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["zeroshot"]
    assert saved["classnames"] == list(WORDS) and set(saved["templates"]) == {"image"}
    predictor = Predictor(tmp_path / "run")
    assert predictor.labels == list(WORDS)
    assert predictor.predict(image=str(files / "small.png")).label in WORDS
    assert main(["predict", str(tmp_path / "run"), "--image", str(files / "small.png")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("prediction: ") and first.split()[1] in WORDS
    # a retrieval index is written with the umask's modes too (atomic helpers), like a plain open()
    assert main(["retrieve", "index", str(tmp_path / "run"), "--data", "spoken-digits", "--modality", "image",
                 "--limit", "10", "--out", str(tmp_path / "index")]) == 0
    (tmp_path / "plain.txt").write_text("x")
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "index").iterdir()} == {
        name: plain for name in ("index.safetensors", "index.json", "retrieval.json")}


def test_processor_overrides_for_eval(files, tmp_path, capsys):
    torch.manual_seed(0)
    classifier = MultimodalModel(from_dict(ModelConfig, {"modalities": {"photo": MODALITIES["photo"]},
                                                        "fusion": {"dim": 8}, "head": {"labels": CLASSES}}))
    classifier.save_pretrained(tmp_path / "model")
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{i}", "photo": str(files / "large.png"), "label": c}) + "\n"
                                for i, c in enumerate(CLASSES)))
    args = ["eval", str(tmp_path / "model"), "--data", str(manifest), "--out", str(tmp_path / "ev"),
            "--no-robustness", "--no-efficiency", "--bootstrap", "0"]
    assert main(args) == 2
    assert "max_pixels" in capsys.readouterr().err
    assert main(args + ["--set", "model.modalities.photo.processor.max_pixels=20000"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_samples"] == 3
