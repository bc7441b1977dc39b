"""Predictor: raw inputs (file paths, arrays, strings) → labels and probabilities, with any subset of modalities.

The model directory's own processors turn raw inputs into the Batch the model was trained on, so a prediction
equals ``model(batch)`` on what the data pipeline would have produced for the same files. A modality that is
not given (or given as None / an empty string, like an empty manifest cell) is carried as absent via the mask.

Every model ``polymodal train`` writes loads here (by the ``task`` recorded in config.json, never guessed):

- a classifier (MultimodalModel): the head's label and probabilities;
- an alignment model (AlignmentModel): a zero-shot label for image / audio inputs against the class names and
  prompt templates saved with it (:mod:`.zeroshot`), and :meth:`Predictor.embed` for unit-norm embeddings.

``overrides`` (``--set`` of ``polymodal predict`` / ``eval``) change processor options of the saved model, e.g.
``model.modalities.image.processor.max_pixels=100000000`` to accept a larger image than the saved cap.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, parse_override
from ..data.errors import DataError
from ..errors import PolymodalError
from ..heads import probabilities
from ..models import ModelDirectoryError
from ..tasks import UnknownTaskError, task_of
from ..tasks import load_model as load_saved_model
from ..types import Batch
from .zeroshot import PredictionError, ZeroShotClassifier


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


def is_alignment_model(model: Any) -> bool:
    """True for a model of the alignment task (multi-tower embeddings, no classifier head): its recorded task."""
    try:
        return task_of(model).name == "alignment"
    except UnknownTaskError:
        return False


def load_model(path: str | os.PathLike) -> tuple[nn.Module, Path]:
    """The model saved in a model or run directory (its best/), rebuilt by the task its config.json records:
    (model, model dir). Raises FileNotFoundError when the directory holds no model, ConfigError when config.json
    is not readable JSON or records no task."""
    model_dir = resolve_model_dir(path)
    try:
        return load_saved_model(model_dir), model_dir
    except ModelDirectoryError as err:
        raise ConfigError(str(err)) from err


def apply_processor_overrides(model: nn.Module, overrides: list[str] | None) -> None:
    """Apply ``model.modalities.<name>.processor.<key>=value`` overrides to a loaded model's processors.

    Only processor options can change after training (the weights fix everything else); limits such as
    ``max_pixels`` (images) or ``max_seconds_file`` (audio) are the usual ones. Options that change the tensors
    (``image_size``, ``n_mels``) make inputs differ from what the model was trained on. Raises ConfigError naming
    the override for any other key or an invalid value.
    """
    if not overrides:
        return
    from ..data.processors import build_processor

    modalities = model.config.modalities
    for text in overrides:
        path, value = parse_override(text)
        if len(path) < 5 or path[:2] != ["model", "modalities"] or path[3] != "processor":
            raise ConfigError(
                f"--set {text!r}: a saved model only takes processor options here, "
                "model.modalities.<name>.processor.<key>=VALUE (e.g. model.modalities.image.processor.max_pixels="
                "100000000); the other settings are fixed by its weights"
            )
        name = path[2]
        if name not in modalities:
            raise ConfigError(f"--set {text!r}: the model has no modality {name!r}; it has {', '.join(modalities)}")
        options = json.loads(json.dumps(modalities[name].processor))  # a deep copy of plain data
        node = options
        for part in path[4:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
        node[path[-1]] = value
        updated = dataclasses.replace(modalities[name], processor=options)
        build_processor(updated, name)  # validates now: ConfigError names model.modalities.<name>.processor.<key>
        modalities[name] = updated
    model._processors = None  # rebuilt from the updated config on next use


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a model directory or a run directory (whose best model lives in best/)."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    for candidate in ("best", "model"):
        if (path / candidate / "model.safetensors").exists():
            return path / candidate
    raise FileNotFoundError(f"{path} is neither a model directory (config.json + model.safetensors) nor a run directory")


class NonFiniteModelError(PolymodalError):
    """The model's weights or outputs are NaN / inf (a diverged run): refused rather than printed as NaN."""


def check_finite_model(model: torch.nn.Module, source: Any) -> None:
    """Raise NonFiniteModelError when a weight of ``model`` (loaded from ``source``) is NaN or inf."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteModelError(
                f"model {source}: weight {name} holds NaN/inf (saved from a diverged run); retrain it "
                "(e.g. with a lower train.lr) instead of predicting with it"
            )


def check_finite_outputs(outputs: torch.Tensor, source: Any) -> None:
    """Raise NonFiniteModelError when the model's outputs (logits / probabilities) hold NaN or inf."""
    if not bool(torch.isfinite(outputs).all()):
        raise NonFiniteModelError(
            f"model {source} gave non-finite outputs (NaN/inf) for this input: its weights overflow (a diverged "
            "run); retrain it (e.g. with a lower train.lr) instead of predicting with it"
        )


def _absent(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


class Predictor:
    """``Predictor("runs/x").predict(image="seven.png", audio="seven.wav")``.

    Inputs are keyed by modality name; a modality kind ("image", "audio", "text") also works when the model has
    exactly one modality of that kind (so ``--image`` reaches a modality named "photo").

    ``model``: a model / run directory or a loaded MultimodalModel / AlignmentModel. ``overrides``: processor
    options (:func:`apply_processor_overrides`). Alignment models only: ``classnames`` and ``templates`` (one list,
    or per modality name) replace the zero-shot classes / prompts saved with the model.
    """

    def __init__(self, model: nn.Module | str | os.PathLike, device: str = "cpu", threshold: float = 0.5,
                 overrides: list[str] | None = None, classnames: list[str] | None = None,
                 templates: list[str] | dict[str, list[str]] | None = None):
        self.source: Any = "(in memory)"  # named in errors
        if not isinstance(model, nn.Module):
            model, self.source = load_model(model)
        apply_processor_overrides(model, overrides)
        check_finite_model(model, self.source)
        self.model = model.to(device).eval()
        self.device = device
        self.threshold = threshold
        self.is_alignment = is_alignment_model(self.model)
        model_dir = self.source if isinstance(self.source, Path) else None
        self.zeroshot = ZeroShotClassifier(self.model, classnames, templates, model_dir) if self.is_alignment else None
        names = self.model.modality_names
        kinds = [self.model.config.modalities[name].kind for name in names]
        self._by_kind = {kind: name for kind, name in zip(kinds, names) if kinds.count(kind) == 1}

    @property
    def labels(self) -> list[str]:
        """The labels a prediction chooses from (an alignment model: its zero-shot class names)."""
        return list(self.zeroshot.classnames) if self.zeroshot is not None else list(self.model.labels)

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
        """One Prediction per sample (a dict modality name or kind → raw input)."""
        if self.zeroshot is not None:
            return self._predict_zeroshot(samples)
        batch = self.make_batch(samples)
        resolved = [self._resolve(sample) for sample in samples]
        logits = self.model(batch.to(self.device)).logits.float()
        probs = probabilities(logits, self.model.task).cpu()
        check_finite_outputs(probs, self.source)  # never NaN probabilities with exit 0
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

    def _predict_zeroshot(self, samples: list[dict[str, Any]]) -> list[Prediction]:
        """Alignment model: zero-shot label of each sample's image / audio inputs (mean over those it has)."""
        zeroshot = self.zeroshot
        resolved = [self._resolve(sample) for sample in samples]
        used = [[name for name in zeroshot.query_modalities if not _absent(sample.get(name))] for sample in resolved]
        kind = "/".join(sorted({self.model.config.modalities[m].kind for m in zeroshot.query_modalities})) or "image"
        for index, sample in enumerate(resolved):
            texts = [name for name in self.model.modality_names
                     if name not in zeroshot.query_modalities and not _absent(sample.get(name))]
            if texts or not used[index]:
                where = f"sample {index}: " if len(samples) > 1 else ""
                raise PredictionError(
                    f"{where}an alignment model ({', '.join(self.model.modality_names)}) predicts a zero-shot label "
                    f"for {kind} inputs only; it does not classify {', '.join(texts) or 'an empty sample'}. To find "
                    "the items that match a text, build an index and query it: `polymodal retrieve index MODEL "
                    "--data DATA --modality NAME --out INDEX`, then `polymodal retrieve query INDEX --text ...`"
                )
        batch = self.make_batch(resolved).to(self.device)
        probs = zeroshot.probabilities(batch, used)
        check_finite_outputs(probs, self.source)
        names = zeroshot.classnames
        return [
            Prediction(label=names[int(probs[i].argmax())], probabilities=dict(zip(names, probs[i].tolist())),
                       modalities=used[i])
            for i in range(len(resolved))
        ]

    @torch.no_grad()
    def embed_batch(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Alignment models: modality name → unit-norm embeddings [B, E] (rows of absent inputs are zeros), for
        every modality given in at least one sample. Raises PredictionError for a classifier."""
        if not self.is_alignment:
            raise PredictionError(
                "embed needs an alignment model (a shared embedding space); this is a classifier "
                f"(MultimodalModel, labels {self.labels[:5]}): use predict"
            )
        resolved = [self._resolve(sample) for sample in samples]
        batch = self.make_batch(resolved).to(self.device)
        given = [name for name in self.model.modality_names if any(not _absent(s.get(name)) for s in resolved)]
        return {name: self.model.encode(batch, name).cpu() for name in given}

    def embed(self, sample: dict[str, Any] | None = None, **modalities: Any) -> dict[str, torch.Tensor]:
        """One sample → modality name → its unit-norm embedding [E] (alignment models), e.g.
        ``embed(image="seven.png", text="a handwritten seven")``; cosine similarity = dot product."""
        embeddings = self.embed_batch([dict(sample or {}, **modalities)])
        return {name: emb[0] for name, emb in embeddings.items()}

    def predict(self, sample: dict[str, Any] | None = None, **modalities: Any) -> Prediction:
        """One sample, as a dict or keyword arguments: ``predict(image="x.png", text="...")``."""
        sample = dict(sample or {}, **modalities)
        return self.predict_batch([sample])[0]
