"""Predictor: raw inputs (file paths, arrays, strings) → labels and probabilities, with any subset of modalities.

The model directory's own processors turn raw inputs into the Batch the model was trained on, so a prediction
equals ``model(batch)`` on what the data pipeline would have produced for the same files. A modality that is
not given (or given as None / an empty string, like an empty manifest cell) is carried as absent via the mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.errors import DataError
from ..heads import probabilities
from ..model import MultimodalModel
from ..types import Batch


@dataclass
class Prediction:
    label: str | list[str]  # the predicted label (multi-label: every label over the threshold)
    probabilities: dict[str, float]  # label → probability (multiclass / binary: they sum to 1)
    modalities: list[str]  # which modalities the prediction used

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable labels as (label, probability), most probable first."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": self.probabilities, "modalities": self.modalities}


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a model directory or a run directory (whose best model lives in best/)."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    for candidate in ("best", "model"):
        if (path / candidate / "model.safetensors").exists():
            return path / candidate
    raise FileNotFoundError(f"{path} is neither a model directory (config.json + model.safetensors) nor a run directory")


def _absent(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


class Predictor:
    """``Predictor("runs/x").predict(image="seven.png", audio="seven.wav")``.

    Inputs are keyed by modality name; a modality kind ("image", "audio", "text") also works when the model has
    exactly one modality of that kind (so ``--image`` reaches a modality named "photo").
    """

    def __init__(self, model: MultimodalModel | str | os.PathLike, device: str = "cpu", threshold: float = 0.5):
        if not isinstance(model, MultimodalModel):
            model = MultimodalModel.from_pretrained(resolve_model_dir(model))
        self.model = model.to(device).eval()
        self.device = device
        self.threshold = threshold
        names = self.model.modality_names
        kinds = [self.model.config.modalities[name].kind for name in names]
        self._by_kind = {kind: name for kind, name in zip(kinds, names) if kinds.count(kind) == 1}

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    def _resolve(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Map kind aliases onto modality names; reject unknown keys and samples with no usable input."""
        names = self.model.modality_names
        resolved: dict[str, Any] = {}
        for key, raw in sample.items():
            name = key if key in names else self._by_kind.get(key)
            if name is None:
                raise ValueError(f"unknown modality {key!r}: this model takes {names}")
            if name in resolved and not _absent(resolved[name]):
                raise ValueError(f"modality {name!r} given twice (as {name!r} and as its kind {key!r})")
            resolved[name] = raw
        if all(_absent(raw) for raw in resolved.values()):
            raise ValueError(f"a sample needs at least one of the model's modalities {names}")
        return resolved

    def make_batch(self, samples: list[dict[str, Any]]) -> Batch:
        """Raw samples → the Batch the model was trained on (absent modalities: processor.empty(), mask False)."""
        samples = [self._resolve(sample) for sample in samples]
        inputs, present = {}, {}
        for name in self.model.modality_names:
            processor = self.model.processors[name]
            items, flags = [], []
            for index, sample in enumerate(samples):
                raw = sample.get(name)
                if _absent(raw):
                    items.append(processor.empty())
                    flags.append(False)
                    continue
                try:
                    processor.check(raw)  # header checks first: size caps refuse a huge file before decoding
                    items.append(processor(raw))
                except DataError as err:
                    where = f"sample {index}: " if len(samples) > 1 else ""
                    raise DataError(f"{where}{name}: {err}") from err
                flags.append(True)
            inputs[name] = processor.collate(items)
            present[name] = torch.tensor(flags, dtype=torch.bool)
        return Batch(inputs=inputs, present=present, ids=[str(i) for i in range(len(samples))])

    @torch.no_grad()
    def predict_batch(self, samples: list[dict[str, Any]]) -> list[Prediction]:
        batch = self.make_batch(samples)
        resolved = [self._resolve(sample) for sample in samples]
        logits = self.model(batch.to(self.device)).logits.float()
        probs = probabilities(logits, self.model.task).cpu()
        labels = self.model.labels
        if self.model.task == "binary" and len(labels) == 1:  # one named (positive) class: name the other side
            labels = [f"not {labels[0]}", labels[0]]
        results = []
        for i, sample in enumerate(resolved):
            row = probs[i].tolist()
            if self.model.task == "multilabel":
                label: str | list[str] = [lab for lab, p in zip(labels, row) if p >= self.threshold]
            else:
                label = labels[int(probs[i].argmax())]
            used = [name for name in self.model.modality_names if not _absent(sample.get(name))]
            results.append(Prediction(label=label, probabilities=dict(zip(labels, row)), modalities=used))
        return results

    def predict(self, sample: dict[str, Any] | None = None, **modalities: Any) -> Prediction:
        """One sample, as a dict or keyword arguments: ``predict(image="x.png", text="...")``."""
        sample = dict(sample or {}, **modalities)
        return self.predict_batch([sample])[0]
