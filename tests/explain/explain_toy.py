"""Tiny models and a synthetic "one region carries the label" image task for the explain tests."""

from __future__ import annotations

import numpy as np
import torch

from polymodal.config import ModelConfig, from_dict
from polymodal.models import MultimodalModel
from polymodal.tasks import task_loss
from polymodal.types import Batch

IMAGE_VIT = {"kind": "image", "encoder": "image_vit", "processor": {"image_size": 8, "channels": 1},
             "options": {"dim": 16, "depth": 1, "heads": 2, "patch_size": 2, "mlp_ratio": 2.0}}
AUDIO_CNN = {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [4, 8]},
             "processor": {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 16, "max_seconds": 0.5}}
TEXT = {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2, "dropout": 0.0},
        "processor": {"max_length": 12, "vocab_size": 64}}


def build_model(modalities: dict, fusion: str = "transformer", labels=("a", "b", "c"), seed: int = 0,
                fusion_options: dict | None = None) -> MultimodalModel:
    torch.manual_seed(seed)
    options = fusion_options if fusion_options is not None else (
        {"layers": 1, "heads": 2, "dropout": 0.0} if fusion in ("transformer", "cross_attention") else {})
    cfg = from_dict(ModelConfig, {
        "modalities": modalities,
        "fusion": {"name": fusion, "dim": 16, "options": options},
        "head": {"labels": list(labels), "dropout": 0.0},
    }, "model")
    return MultimodalModel(cfg).eval()


def quadrant_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pixel_values [count, 1, 8, 8] (already normalised) and labels [count].

    Every 4×4 quadrant is a constant ±1 plus small noise; the label is 1 when the TOP-LEFT quadrant is +1. The
    other quadrants are independent coin flips with the same statistics: they carry no information.
    """
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(count, 2, 2))
    pixels = np.kron(signs, np.ones((4, 4))) + rng.normal(0.0, 0.1, size=(count, 8, 8))
    labels = (signs[:, 0, 0] > 0).astype(np.int64)
    return torch.tensor(pixels, dtype=torch.float32).unsqueeze(1), torch.from_numpy(labels)


def image_batch(pixels: torch.Tensor, labels: torch.Tensor | None = None) -> Batch:
    return Batch(inputs={"image": {"pixel_values": pixels}},
                 present={"image": torch.ones(pixels.shape[0], dtype=torch.bool)}, labels=labels)


def train_quadrant_model(steps: int = 150, seed: int = 0) -> MultimodalModel:
    """A tiny ViT classifier trained for a few seconds on :func:`quadrant_images`."""
    model = build_model({"image": IMAGE_VIT}, fusion="concat", labels=("off", "on"), seed=seed)
    pixels, labels = quadrant_images(2048, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(labels), (64,), generator=generator)
        loss = task_loss(model, image_batch(pixels[index], labels[index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
