"""Tiny synthetic loaders, model and train config shared by the run-safety tests (lock, divergence, disk, signals,
progress output). 40 training rows / batch 8 = 5 optimizer steps per epoch; 16 validation rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from finetune_fixtures import LABELS, tiny_batch
from torch.utils.data import DataLoader, Dataset

from polymodal.config import FusionConfig, HeadConfig, ModalityConfig, ModelConfig, TrainConfig
from polymodal.models import MultimodalModel
from polymodal.types import Batch

STEPS_PER_EPOCH = 5


class BatchRows(Dataset):
    """Rows of one synthetic Batch, served one index at a time and collated back into Batches."""

    def __init__(self, size: int, seed: int):
        self.batch = tiny_batch(size=size, seed=seed)

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        rows = torch.tensor(indices)
        b = self.batch
        return Batch(
            inputs={m: {k: v[rows] for k, v in d.items()} for m, d in b.inputs.items()},
            present={m: v[rows] for m, v in b.present.items()},
            labels=b.labels[rows],
            ids=[b.ids[i] for i in indices],
        )


def loaders(train_size: int = 40, batch_size: int = 8):
    train, val = BatchRows(train_size, seed=1), BatchRows(16, seed=2)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=train.collate),
        DataLoader(val, batch_size=16, collate_fn=val.collate),
    )


def model(seed: int = 0) -> MultimodalModel:
    """Tiny image+text model with dropout, so an RNG state lost on resume would change the result."""
    torch.manual_seed(seed)
    config = ModelConfig(
        modalities={
            "image": ModalityConfig(kind="image", encoder="image_cnn", options={"channels": [4, 8], "dropout": 0.2}),
            "text": ModalityConfig(
                kind="text",
                encoder="text_transformer",
                options={"vocab_size": 40, "dim": 16, "depth": 1, "heads": 2, "max_positions": 16, "dropout": 0.2},
            ),
        },
        fusion=FusionConfig(name="gated", dim=8),
        head=HeadConfig(labels=list(LABELS), dropout=0.3),
    )
    return MultimodalModel(config)


def train_config(**overrides) -> TrainConfig:
    options = dict(epochs=3, lr=5e-3, warmup_ratio=0.2, progress=False, log_every=1, seed=3, monitor="val_loss",
                   monitor_mode="min")
    options.update(overrides)
    return TrainConfig(**options)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def hold_lock_in_subprocess(directory: Path) -> subprocess.Popen:
    """Another process that takes the run lock of ``directory`` and keeps it until killed."""
    code = (
        "import sys, time\n"
        "from polymodal.training.run_lock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    line = proc.stdout.readline()
    assert line.strip() == "held" and time.time() < deadline, f"lock holder did not start: {line!r}"
    return proc


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
