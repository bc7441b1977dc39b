"""A tiny image task where the learning rate decides everything: 8x8 grey images whose top or bottom half is
bright (label "top" / "bottom") under noise. A 4-8 channel CNN learns it in 3 epochs at lr ~1e-2 and stays at
chance at lr 1e-6. Manifests for train / val / test are written into a temp directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"train": 64, "val": 32, "test": 32}

RECIPE = """
model:
  modalities:
    image: {{kind: image, encoder: image_cnn, options: {{channels: [4, 8]}}, processor: {{image_size: 8, channels: 1}}}}
  fusion: {{name: concat, dim: 8}}
  head: {{dropout: 0.0}}
data: {{train: {root}/train.jsonl, val: {root}/val.jsonl, test: {root}/test.jsonl, batch_size: 16}}
train: {{epochs: {epochs}, lr: 0.01, warmup_ratio: 0.0, progress: false, log_every: 0, seed: 0, device: cpu}}
"""

SPACE = """
metric: val_accuracy
direction: maximize
params:
  train.lr: {type: log_float, low: 1.0e-6, high: 3.0e-2}
"""


def write_task(root: Path, epochs: int = 3, seed: int = 0) -> Path:
    """Images + manifests under ``root``; returns the recipe path (``root/recipe.yaml``)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, size in SIZES.items():
        rows = []
        for i in range(size):
            label = "top" if i % 2 == 0 else "bottom"
            pixels = rng.normal(0.3, 0.1, (8, 8))
            pixels[:4] += 0.5 if label == "top" else 0.0
            pixels[4:] += 0.5 if label == "bottom" else 0.0
            name = f"images/{split}_{i}.png"
            Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(root / name)
            rows.append({"id": f"{split}{i}", "image": name, "label": label})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(root=root, epochs=epochs))
    return recipe


def write_space(root: Path, text: str = SPACE) -> Path:
    path = root / "space.yaml"
    path.write_text(text)
    return path
