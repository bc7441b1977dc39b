"""save_pretrained → from_pretrained: identical outputs for every fusion, processors rebuilt identically,
safetensors + JSON only (nothing pickled), clear errors for directories that do not match."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import polymodal.fusion  # noqa: F401  (registers the fusions)
from polymodal.config import ModelConfig, from_dict
from polymodal.models import MultimodalModel
from polymodal.registry import FUSIONS
from polymodal.tasks import task_loss
from polymodal.types import Batch

MODALITIES = {
    "image": {"kind": "image", "processor": {"image_size": 16, "channels": 3},
              "options": {"channels": [8, 16]}},
    "audio": {"kind": "audio", "processor": {"sample_rate": 8000, "max_seconds": 0.3, "n_mels": 16, "n_fft": 256,
                                             "hop_length": 80}},
    "text": {"kind": "text", "processor": {"max_length": 10, "vocab_size": 300}},
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def make_model(fusion="concat", task="multiclass", labels=("a", "b", "c"), modalities=MODALITIES, hidden=0, seed=0):
    config = from_dict(ModelConfig, {"modalities": modalities, "fusion": {"name": fusion, "dim": 16},
                                     "head": {"task": task, "labels": list(labels), "hidden": hidden}})
    torch.manual_seed(seed)
    return MultimodalModel(config)


def raw_inputs(kind: str, rng: np.random.Generator):
    if kind == "image":
        return rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
    if kind == "audio":
        return rng.standard_normal(int(rng.integers(1200, 3000))).astype(np.float32) * 0.3, 8000
    return " ".join(rng.choice(["one", "two", "red", "blue", "cat"], size=int(rng.integers(1, 8))))


def batch_from(processors: dict, kinds: dict[str, str], seed: int = 0) -> tuple[Batch, list[dict]]:
    """Four samples from raw inputs; sample i lacks modality (i mod 4) for i < 3 (sample 3 has them all)."""
    rng = np.random.default_rng(seed)
    names = list(processors)
    raws = [{name: None if i < 3 and names[i % len(names)] == name else raw_inputs(kinds[name], rng)
             for name in names} for i in range(4)]
    inputs, present = {}, {}
    for name, processor in processors.items():
        items = [processor.empty() if raw[name] is None else processor(raw[name]) for raw in raws]
        inputs[name] = processor.collate(items)
        present[name] = torch.tensor([raw[name] is not None for raw in raws])
    return Batch(inputs=inputs, present=present, ids=list("wxyz")), raws


def assert_no_pickles(directory):
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in PICKLE_SUFFIXES], files
    assert not [p for p in files if p.name.endswith(".tmp")], files  # atomic writes leave no temp files
    with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
        assert len(list(weights.keys())) > 0


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch).logits


@pytest.mark.parametrize("fusion", [*FUSIONS.names(), "late"])
def test_every_fusion_reloads_with_identical_outputs(fusion, tmp_path):
    model = make_model(fusion)
    kinds = {name: spec["kind"] for name, spec in MODALITIES.items()}
    batch, raws = batch_from(model.processors, kinds)
    expected = logits_of(model, batch)
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    assert_no_pickles(tmp_path / "m")

    reloaded = MultimodalModel.from_pretrained(tmp_path / "m")
    assert not reloaded.training
    assert reloaded.config == model.config and reloaded.labels == model.labels and reloaded.task == model.task
    # the processors are rebuilt from config.json: the same raw inputs give the same tensors
    again, _ = batch_from(reloaded.processors, kinds)
    for name in batch.inputs:
        for key, value in batch.inputs[name].items():
            assert torch.equal(again.inputs[name][key], value), (name, key)
    torch.testing.assert_close(logits_of(reloaded, again), expected, atol=1e-6, rtol=0)
    state, loaded = model.state_dict(), reloaded.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)


@pytest.mark.parametrize(
    "encoders,task,labels",
    [({"image": "image_vit", "audio": "audio_transformer", "text": "text_transformer"}, "binary", ["neg", "pos"]),
     ({"image": "image_cnn", "audio": "audio_cnn", "text": "text_transformer"}, "multilabel", ["x", "y", "z"])],
    ids=["vit-transformers-binary", "cnns-multilabel"],
)
def test_encoder_choices_and_heads_survive_a_round_trip(encoders, task, labels, tmp_path):
    modalities = json.loads(json.dumps(MODALITIES))
    for name, encoder in encoders.items():
        modalities[name]["encoder"] = encoder
        if encoder != "image_cnn":
            modalities[name].pop("options", None)
    model = make_model("transformer", task, labels, modalities, hidden=8)
    model.data_config = {"name": "spoken-digits", "limit": 10}
    batch, _ = batch_from(model.processors, {n: s["kind"] for n, s in modalities.items()}, seed=1)
    expected = logits_of(model, batch)
    model.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    assert payload["task"] == "classification" and "polymodal_version" in payload
    assert {n: m["encoder"] for n, m in payload["model"]["modalities"].items()} == encoders
    reloaded = MultimodalModel.from_pretrained(tmp_path)
    assert reloaded.data_config == {"name": "spoken-digits", "limit": 10}
    torch.testing.assert_close(logits_of(reloaded, batch), expected, atol=1e-6, rtol=0)


def test_saving_again_overwrites_and_a_trained_model_reloads(tmp_path):
    model = make_model("gated")
    model.save_pretrained(tmp_path)
    batch, _ = batch_from(model.processors, {n: s["kind"] for n, s in MODALITIES.items()})
    batch.labels = torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(2):  # weights (and batch-norm statistics) change
        optimizer.zero_grad()
        task_loss(model, batch).backward()
        optimizer.step()
    expected = logits_of(model, batch)
    model.save_pretrained(tmp_path)
    assert_no_pickles(tmp_path)
    torch.testing.assert_close(logits_of(MultimodalModel.from_pretrained(tmp_path), batch), expected, atol=1e-6, rtol=0)


def test_mismatched_or_missing_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found: is .* a polymodal model directory"):
        MultimodalModel.from_pretrained(tmp_path / "nothing")
    make_model("concat").save_pretrained(tmp_path / "m")
    payload = json.loads((tmp_path / "m/config.json").read_text())
    payload["model"]["fusion"]["name"] = "tensor"  # different parameters than the saved weights
    (tmp_path / "m/config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="model.safetensors does not match the config"):
        MultimodalModel.from_pretrained(tmp_path / "m")
    payload["model"]["fusion"]["nme"] = "concat"
    (tmp_path / "m/config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"unknown config key 'model\.fusion\.nme'"):
        MultimodalModel.from_pretrained(tmp_path / "m")
