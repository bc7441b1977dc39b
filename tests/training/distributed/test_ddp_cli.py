"""`polymodal train CONFIG --nproc 2` (torchrun under the hood, gloo on CPU) on the real recipes: one run directory
written by rank 0 (one epoch row per epoch, the train split's exact sample count, metrics.json with the test
report), one summary line printed, the lock released; classification and alignment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from polymodal.config import load_config
from polymodal.models import AlignmentModel
from polymodal.recipes.train import prepare
from polymodal.tasks import get_task

CLASSIFIER = """
model:
  modalities:
    image: {kind: image, encoder: image_cnn, options: {channels: [8, 16], norm: group}, processor: {image_size: 16, channels: 1}}
    audio:
      kind: audio
      encoder: audio_cnn
      options: {channels: [8, 16]}
      processor: {sample_rate: 8000, n_fft: 256, hop_length: 80, n_mels: 20, max_seconds: 1.0}
  fusion: {name: gated, dim: 16}
data: {name: spoken-digits, limit: 60, batch_size: 8}
train: {epochs: 2, lr: 0.003, progress: false, log_every: 1, device: cpu}
"""

ALIGNER = """
task: alignment
model:
  modalities:
    image: {kind: image, encoder: image_cnn, options: {channels: [8, 16], norm: group}, processor: {image_size: 8, channels: 1}}
    text: {kind: text, options: {dim: 16, depth: 1}}
  embed_dim: 16
  objectives: [{name: clip}]
data: {name: spoken-digits, limit: 40, batch_size: 8, eval_batch_size: 40}
train: {epochs: 2, lr: 0.003, progress: false, log_every: 0, device: cpu}
"""


def _train(tmp_path, recipe: str, *extra: str) -> tuple[subprocess.CompletedProcess, object]:
    config = tmp_path / "recipe.yaml"
    config.write_text(recipe)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "polymodal", "train", str(config), "--nproc", "2", "--out", str(run),
                           *extra],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, run


def _epochs(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row["kind"] == "epoch"]


@pytest.mark.slow
def test_nproc_2_trains_one_classifier(tmp_path):
    done, run = _train(tmp_path, CLASSIFIER)
    _, loaders, _ = prepare(load_config(tmp_path / "recipe.yaml"))
    epochs = _epochs(run)
    assert [row["epoch"] for row in epochs] == [0, 1]
    assert all(row["train_samples"] == len(loaders["train"].dataset) and row["world_size"] == 2 for row in epochs)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["test"]["num_samples"] == len(loaders["test"].dataset)
    assert done.stdout.count("run directory:") == 1
    assert (run / "best" / "model.safetensors").exists() and not (run / ".polymodal.lock").exists()


@pytest.mark.slow
def test_nproc_2_trains_one_aligner(tmp_path):
    done, run = _train(tmp_path, ALIGNER)
    epochs = _epochs(run)
    assert [row["epoch"] for row in epochs] == [0, 1] and all(row["world_size"] == 2 for row in epochs)
    assert all(0.0 <= row["val_retrieval_R@1"] <= 1.0 for row in epochs)
    summary = json.loads((run / "metrics.json").read_text())
    assert "retrieval" in summary["test"] and done.stdout.count("run directory:") == 1
    # The best epoch's validation numbers (rank 0, contrastive loss kept local) are one process's on best/.
    config = load_config(tmp_path / "recipe.yaml", ["task=alignment"])
    _, loaders, _ = prepare(config, splits=("train", "val"))
    best = AlignmentModel.from_pretrained(run / "best")
    metrics = get_task("alignment").validate(best, loaders["val"], torch.device("cpu"), None, config)
    row = [row for row in epochs if row["best"]][-1]  # best/ holds the last improvement
    assert row["val_loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    assert row["val_retrieval_R@1"] == pytest.approx(metrics["retrieval_R@1"], abs=1e-9)


@pytest.mark.slow
def test_nproc_2_frozen_encoders_build_the_feature_cache_once(tmp_path):
    """Frozen encoders: rank 0 builds the on-disk feature cache, rank 1 reads it (no second build racing it)."""
    done, run = _train(tmp_path, CLASSIFIER, "--finetune=frozen")
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["feature_cache"]["all_cached"] is True
    assert [row["epoch"] for row in _epochs(run)] == [0, 1]
    assert done.stdout.count("run directory:") == 1
