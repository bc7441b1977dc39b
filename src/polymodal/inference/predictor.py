"""Predictor: raw inputs (file paths, arrays, strings) → labels and probabilities, with any subset of modalities."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..heads import probabilities
from ..model import MultimodalModel
from ..types import Batch


@dataclass
class Prediction:
    label: str | list[str]  # the predicted label (multi-label: every label over the threshold)
    probabilities: dict[str, float]
    modalities: list[str]  # which modalities the prediction used

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a model directory or a run directory (whose best model lives in best/)."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    for candidate in ("best", "model"):
        if (path / candidate / "model.safetensors").exists():
            return path / candidate
    raise FileNotFoundError(f"{path} is neither a model directory (config.json + model.safetensors) nor a run directory")


class Predictor:
    """``Predictor("runs/x").predict({"image": "seven.png", "audio": "seven.wav"})``."""

    def __init__(self, model: MultimodalModel | str | os.PathLike, device: str = "cpu", threshold: float = 0.5):
        if not isinstance(model, MultimodalModel):
            model = MultimodalModel.from_pretrained(resolve_model_dir(model))
        self.model = model.to(device).eval()
        self.device = device
        self.threshold = threshold

    def make_batch(self, samples: list[dict[str, Any]]) -> Batch:
        names = self.model.modality_names
        for sample in samples:
            unknown = sorted(set(sample) - set(names))
            if unknown:
                raise ValueError(f"unknown modality {unknown[0]!r}: this model takes {names}")
            if not any(sample.get(name) is not None for name in names):
                raise ValueError(f"a sample needs at least one of the model's modalities {names}")
        inputs, present = {}, {}
        for name in names:
            processor = self.model.processors[name]
            items, flags = [], []
            for sample in samples:
                raw = sample.get(name)
                items.append(processor.empty() if raw is None else processor(raw))
                flags.append(raw is not None)
            inputs[name] = processor.collate(items)
            present[name] = torch.tensor(flags, dtype=torch.bool)
        return Batch(inputs=inputs, present=present, ids=[str(i) for i in range(len(samples))])

    @torch.no_grad()
    def predict_batch(self, samples: list[dict[str, Any]]) -> list[Prediction]:
        batch = self.make_batch(samples).to(self.device)
        logits = self.model(batch).logits.float()
        probs = probabilities(logits, self.model.task).cpu()
        labels = self.model.labels
        results = []
        for i, sample in enumerate(samples):
            row = probs[i].tolist()
            if self.model.task == "multilabel":
                label: str | list[str] = [lab for lab, p in zip(labels, row) if p >= self.threshold]
            else:
                label = labels[int(probs[i].argmax())]
            used = [name for name in self.model.modality_names if sample.get(name) is not None]
            results.append(Prediction(label=label, probabilities=dict(zip(labels, row)), modalities=used))
        return results

    def predict(self, sample: dict[str, Any] | None = None, **modalities: Any) -> Prediction:
        """One sample, as a dict or keyword arguments: ``predict(image="x.png", text="...")``."""
        sample = dict(sample or {}, **modalities)
        return self.predict_batch([sample])[0]
