"""The alignment recipe end to end: config → Trainer → best model → test metrics, save/load, pair-only manifests."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.config import ConfigError, RunConfig, from_dict, load_config
from polymodal.models import AlignmentModel
from polymodal.recipes.evaluate import evaluate_alignment_path
from polymodal.recipes.train import prepare, train

TINY_MODALITIES = {
    "image": {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 8, "channels": 1},
              "options": {"channels": [8, 16]}},
    # 8 kHz log-mels (the recordings' own rate): no resampling, the main cost of processing audio.
    "audio": {"kind": "audio", "encoder": "audio_cnn",
              "processor": {"max_seconds": 0.5, "n_mels": 16, "sample_rate": 8000, "n_fft": 200, "hop_length": 80},
              "options": {"channels": [8, 16]}},
    "text": {"kind": "text", "options": {"dim": 16, "depth": 1}},
}


def alignment_config_from_dict(data):
    """Plain data → the run config of the alignment task."""
    return from_dict(RunConfig, {"task": "alignment", **data})


def tiny_config(out_dir, **train):
    return alignment_config_from_dict({
        "model": {"modalities": TINY_MODALITIES, "embed_dim": 16, "objectives": [{"name": "clip"}]},
        "data": {"name": "spoken-digits", "batch_size": 16, "eval_batch_size": 40, "limit": 40},
        "train": {"epochs": 2, "lr": 3e-3, "progress": False, "out_dir": str(out_dir), "log_every": 0, **train},
    })


def test_tiny_run_trains_saves_best_and_reports_test_metrics(tmp_path):
    config = tiny_config(tmp_path / "run")
    assert (config.train.monitor, config.train.monitor_mode) == ("val_loss", "min")
    summary = train(config, verbose=False)
    run = tmp_path / "run"
    assert (run / "best" / "model.safetensors").exists() and (run / "config.yaml").exists()
    history = summary["fit"]["history"]
    assert len(history) == 2 and all("val_loss" in row and "val_retrieval_R@1" in row for row in history)
    assert summary["fit"]["best_metric"] == pytest.approx(min(row["val_loss"] for row in history))
    test = summary["test"]
    assert test["num_samples"] == 40
    directions = set(test["retrieval"]["class"])
    assert directions == {f"{a}_to_{b}" for a in ("image", "audio", "text") for b in ("image", "audio", "text") if a != b}
    assert set(test["zeroshot"]) == {"image", "audio"}  # class names: the digit words
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"][7] == "seven"
    assert 0.0 <= metrics["test"]["retrieval"]["class"]["audio_to_image"]["R@1"] <= 1.0
    # Re-evaluating the saved run (data + class names from its config.yaml) gives the same numbers.
    again = evaluate_alignment_path(run, split="test")
    assert again["retrieval"]["class"]["audio_to_image"]["R@1"] == pytest.approx(test["retrieval"]["class"]["audio_to_image"]["R@1"])
    assert again["zeroshot"]["audio"]["top1"] == pytest.approx(test["zeroshot"]["audio"]["top1"])


def test_saved_model_reproduces_embeddings(tmp_path):
    config = tiny_config(tmp_path / "run", epochs=1)
    config.data.limit = 24
    prepared = prepare(config, splits=("train", "val"))
    summary = train(config, verbose=False, prepared=prepared)
    model = AlignmentModel.from_pretrained(summary["model_dir"])
    batch = next(iter(prepared[1]["val"]))
    # The model trained in-process and the reloaded one: same weights, so the same embeddings.
    again = AlignmentModel.from_pretrained(summary["model_dir"])
    model.save_pretrained(tmp_path / "copy")
    copy = AlignmentModel.from_pretrained(tmp_path / "copy")
    with torch.no_grad():
        for modality in ("image", "audio", "text"):
            reference = model.encode(batch, modality)
            assert torch.equal(again.encode(batch, modality), reference)
            assert torch.equal(copy.encode(batch, modality), reference)
            assert torch.allclose(reference.norm(dim=1), torch.ones(len(batch)), atol=1e-5)


def test_yaml_config_with_overrides_and_clear_errors(tmp_path):
    path = tmp_path / "align.yaml"
    path.write_text(
        "model:\n  modalities:\n    image: {kind: image}\n    text: {kind: text}\n  objectives: [{name: siglip}]\n"
        "data: {name: spoken-digits}\ntrain: {epochs: 3}\ntask: alignment\n"
    )
    config = load_config(path, ["train.epochs=1", "model.embed_dim=32"])
    assert config.train.epochs == 1 and config.model.embed_dim == 32 and config.model.objectives[0].name == "siglip"
    assert config.train.monitor == "val_loss"
    # A config without `task:` whose model section holds alignment keys reads as the alignment task (with a
    # warning naming the line to add); a classification model section stays classification.
    with pytest.warns(FutureWarning, match=r"add that line"):
        assert from_dict(RunConfig, {"model": {"objectives": [{"name": "clip"}]}}).task == "alignment"
    assert from_dict(RunConfig, {"model": {"fusion": {}}}).task == "classification"
    with pytest.raises(ConfigError, match="model.embd_dim"):
        alignment_config_from_dict({"model": {"embd_dim": 3}})
    custom = alignment_config_from_dict({"train": {"monitor": "val_retrieval_R@1", "monitor_mode": "max"}})
    assert custom.train.monitor_mode == "max"


def test_pair_manifest_without_labels_trains_with_instance_retrieval(tmp_path):
    """Pure (image, caption) pairs: no label column, so instance-level retrieval and no zero-shot."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append({"id": f"s{i}", "image": f"im{i}.png", "text": f"picture number {i % 6}"})
    for split, part in (("train", rows[:16]), ("val", rows[16:])):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
    config = alignment_config_from_dict({
        "model": {"modalities": {"image": TINY_MODALITIES["image"], "text": TINY_MODALITIES["text"]},
                  "embed_dim": 16},
        "data": {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl"),
                 "test": str(tmp_path / "val.jsonl"), "batch_size": 8},
        "train": {"epochs": 1, "progress": False, "out_dir": str(tmp_path / "run"), "log_every": 0},
    })
    summary = train(config, verbose=False)
    assert summary["labels"] == [] and summary["class_names"] is None
    test = summary["test"]
    assert set(test["retrieval"]) == {"instance"} and "zeroshot" not in test
    assert test["retrieval"]["instance"]["image_to_text"]["num_queries"] == 8
