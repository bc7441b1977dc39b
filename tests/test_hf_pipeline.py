"""Hugging Face checkpoints through the whole path: a config whose `pretrained:` keys point at tiny local BERT /
ViT / Wav2Vec2 directories → manifest data → 2 training steps → saved model → reload + predict, still working
after the source checkpoints are deleted (the model directory carries hf/<modality>/)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from hf_fixtures import save_tiny_bert, save_tiny_vit, save_tiny_wav2vec2
from PIL import Image
from transformers import AutoTokenizer

from polymodal.cli import main
from polymodal.config import load_config
from polymodal.inference import Predictor
from polymodal.models import MultimodalModel
from polymodal.pipeline import train

WORDS = ["one", "two", "three"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny HF checkpoints in sources/ (deleted by the last test) and a small data set with manifests in data/."""
    root = tmp_path_factory.mktemp("hf-pipeline")
    sources = {"text": save_tiny_bert(root / "sources/bert"), "image": save_tiny_vit(root / "sources/vit"),
               "audio": save_tiny_wav2vec2(root / "sources/wav2vec2")}
    data = root / "data"
    (data / "files").mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {"train": 8, "val": 4, "test": 4}
    for split, count in splits.items():
        rows = []
        for i in range(count):
            label = WORDS[i % 3]
            stem = f"files/{split}{i}"
            Image.fromarray(rng.integers(0, 255, (24, 28, 3), dtype=np.uint8)).save(data / f"{stem}.png")
            sf.write(data / f"{stem}.wav", (rng.standard_normal(2400) * 0.2).astype(np.float32), 8000)
            rows.append({"id": f"{split}{i}", "image": f"{stem}.png", "audio": f"{stem}.wav",
                         "text": "" if i == 1 else f"the number {label}", "label": label})
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": {
            "modalities": {
                "image": {"kind": "image", "pretrained": str(sources["image"])},
                "audio": {"kind": "audio", "pretrained": str(sources["audio"]), "processor": {"max_seconds": 0.3}},
                "text": {"kind": "text", "pretrained": str(sources["text"]), "processor": {"max_length": 12}},
            },
            "fusion": {"name": "cross_attention", "dim": 16},
        },
        "data": {split: str(data / f"{split}.jsonl") for split in splits} | {"batch_size": 4},
        "train": {"max_steps": 2, "lr": 1e-3, "device": "cpu", "progress": False, "log_every": 1},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root, sources


@pytest.fixture(scope="module")
def trained(workspace):
    root, _ = workspace
    config = load_config(root / "config.yaml", [f"train.out_dir={root / 'run'}"])
    summary = train(config, verbose=False)
    return root, summary


def test_two_steps_train_and_save_a_self_contained_model(trained):
    root, summary = trained
    assert summary["fit"]["global_step"] == 2
    assert summary["test"]["num_samples"] == 4 and 0.0 <= summary["test"]["accuracy"] <= 1.0
    best = root / "run/best"
    assert (best / "config.json").is_file() and (best / "model.safetensors").is_file()
    payload = json.loads((best / "config.json").read_text())
    for name in ("image", "audio", "text"):
        assert payload["model"]["modalities"][name]["pretrained"] == f"hf/{name}"
        assert (best / f"hf/{name}/config.json").is_file()
    assert (best / "hf/text/tokenizer_config.json").is_file()
    assert (best / "hf/text/tokenizer.json").is_file() or (best / "hf/text/vocab.txt").is_file()
    assert (best / "hf/image/preprocessor_config.json").is_file()
    assert (best / "hf/audio/preprocessor_config.json").is_file()
    assert not list(best.rglob("*.bin")) and not list(best.rglob("*.pt"))
    metrics = json.loads((root / "run/metrics.json").read_text())
    assert metrics["fit"]["global_step"] == 2


def test_reload_and_predict_after_the_sources_are_deleted(trained, workspace):
    root, _ = trained
    _, sources = workspace
    best = root / "run/best"
    inputs = {"image": str(root / "data/files/test0.png"), "audio": str(root / "data/files/test0.wav"),
              "text": "the number one"}
    original = Predictor(best)
    before, text_only = original.predict(inputs), original.predict(text="the number two")
    shutil.rmtree(root / "sources")  # nothing outside the model directory may be needed any more
    assert not any(path.exists() for path in sources.values())

    model = MultimodalModel.from_pretrained(best)
    assert model.labels == sorted(WORDS)  # sorted labels of the train split
    predictor = Predictor(model)
    after = predictor.predict(inputs)
    assert after.label == before.label and after.modalities == ["image", "audio", "text"]
    for label, prob in before.probabilities.items():
        assert abs(after.probabilities[label] - prob) < 1e-6
    assert abs(sum(after.probabilities.values()) - 1) < 1e-6
    again = predictor.predict(text="the number two")
    assert again.modalities == ["text"]
    assert all(abs(again.probabilities[k] - v) < 1e-6 for k, v in text_only.probabilities.items())

    # the reloaded processors are the checkpoints' own: BERT word pieces, ViT 32 px RGB, 16 kHz waveform
    batch = predictor.make_batch([inputs])
    assert batch.inputs["image"]["pixel_values"].shape == (1, 3, 32, 32)
    assert batch.inputs["audio"]["input_values"].shape == (1, 4800)  # 0.3 s at 16 kHz
    ids = batch.inputs["text"]["input_ids"][0].tolist()
    tokenizer = AutoTokenizer.from_pretrained(str(best / "hf/text"))
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "the", "number", "one", "[SEP]"]
    with torch.no_grad():
        direct = torch.softmax(model(batch).logits, -1)[0]
    assert abs(float(direct.max()) - max(after.probabilities.values())) < 1e-6


def test_cli_predict_on_the_run_directory(trained, capsys):
    root, _ = trained
    args = ["predict", str(root / "run"), "--audio", str(root / "data/files/test1.wav"), "--text", "two", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["modalities"] == ["audio", "text"] and printed["label"] in WORDS
    assert abs(sum(printed["probabilities"].values()) - 1) < 1e-6
