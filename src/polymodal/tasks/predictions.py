"""What a task's predictions are: the types :meth:`Task.predict <polymodal.tasks.base.Task.predict>` returns and
the interface of the post-processor a task builds once per Predictor.

A task turns a model's raw outputs into predictions (DESIGN principle 12): classification gives a label +
probabilities, an alignment model a zero-shot label + probabilities (or its embeddings), the generation tasks
(captioning, vqa, transcription, chat) generated text (:class:`GeneratedText`, made by
:class:`GenerationPostprocessor`). Every prediction type has ``to_dict()`` (JSON-able, one row of
``polymodal predict --data ... --out``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import PolymodalError


class PredictionError(PolymodalError, ValueError):
    """A request the model cannot answer (e.g. a text-only input to an alignment model, ``--classes`` for a
    classifier); the message says what the model can do and which command or option to use instead.

    ``reason``: what cannot be answered; ``hint``: what to do instead (the message is both); ``modalities``: the
    modality names of the sample that were refused (the server names their request fields)."""

    def __init__(self, reason: str, *, hint: str | None = None, modalities: tuple[str, ...] | list[str] = ()):
        self.reason, self.hint, self.modalities = reason, hint, list(modalities)
        super().__init__(f"{reason}. {hint}" if hint else reason)


@dataclass
class Prediction:
    """A label prediction (classification, alignment zero-shot).

    label: the predicted label (multilabel: every label at or over the threshold, possibly none).
    probabilities: label → probability (multiclass / binary / zero-shot: they sum to 1).
    modalities: the modality names the prediction used (the sample's given inputs).
    """

    label: str | list[str]
    probabilities: dict[str, float]
    modalities: list[str]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable labels as (label, probability), most probable first."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": self.probabilities, "modalities": self.modalities}

    def numbers(self) -> list[float]:
        """Every number of the prediction (checked for NaN / inf before it is shown)."""
        return list(self.probabilities.values())


@dataclass
class EmbeddingPrediction:
    """An alignment model's unit-norm embedding of each given input: modality name → vector [E] (cosine
    similarity = dot product)."""

    embeddings: dict[str, torch.Tensor]
    modalities: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"embeddings": {name: [float(x) for x in vector.tolist()] for name, vector in self.embeddings.items()},
                "modalities": self.modalities}

    def numbers(self) -> list[float]:
        return [float(x) for vector in self.embeddings.values() for x in vector.reshape(-1).tolist()]


@dataclass
class GeneratedText:
    """A generation task's prediction: the generated text (the next assistant turn of the sample's conversation).

    text: the decoded answer (special tokens removed, cut at the first stop string, stripped).
    modalities: the attachment modalities the sample gave (e.g. ["image"]; [] for a text-only prompt).
    """

    text: str
    modalities: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"prediction": self.text, "modalities": self.modalities}

    def numbers(self) -> list[float]:
        return []


def decoding_options(model: Any, **options: Any) -> dict[str, Any]:
    """The decoding keyword arguments of a generation model: the defaults saved with it (the run's ``generate``
    section; ``{"max_new_tokens": 32}`` without one) updated with ``options`` (None values ignored)."""
    kwargs = dict(getattr(model, "generation_defaults", None) or {"max_new_tokens": 32})
    kwargs.update({key: value for key, value in options.items() if value is not None})
    return kwargs


class GenerationPostprocessor:
    """Processed samples (``generation.data.SampleBatch``: conversations + processed attachments) → one
    :class:`GeneratedText` per sample, by the model's batched ``generate_text`` (left padding, KV cache) with
    ``decoding`` (the saved defaults, :func:`decoding_options`). No labels, no embedding space."""

    labels: list[str] = []
    head_task = None
    can_embed = False
    generates = True

    def __init__(self, model: Any, task: str, decoding: dict[str, Any] | None = None):
        self.model, self.task = model, task
        self.decoding = decoding_options(model, **(decoding or {}))

    def check(self, given: list[str], embed: bool = False) -> None:
        if embed:
            raise PredictionError(f"a {self.task} model generates text; it has no embedding space",
                                  hint="use Predictor(...).generate(prompt, image=...), `polymodal generate`, or "
                                  "predict for the generated text")

    def predict(self, batch: Any) -> list[GeneratedText]:
        samples = list(batch.samples)
        if not samples:
            return []
        texts = self.model.generate_text(samples, **self.decoding)
        names = list(self.model.config.modalities)  # the model's order, as classification predictions list them
        return [GeneratedText(text, [name for name in names if (sample.get("attachments") or {}).get(name)])
                for sample, text in zip(samples, texts)]

    def embed(self, batch: Any) -> dict[str, torch.Tensor]:
        self.check([], embed=True)
        return {}


class Postprocessor(Protocol):
    """What :meth:`Task.postprocessor` builds once per loaded model (with its options checked) and the
    Predictor, the server and batch prediction call per batch.

    labels: the labels a prediction chooses from ([] when it gives no labels). head_task: multiclass | binary |
    multilabel for a classifier, None otherwise. can_embed: whether :meth:`embed` works (a shared embedding space).
    """

    labels: list[str]
    head_task: str | None
    can_embed: bool

    def check(self, given: list[str], embed: bool = False) -> None:
        """Raise PredictionError when a sample giving only the modalities ``given`` cannot be answered."""

    def predict(self, batch: Any) -> list[Any]:
        """One prediction per sample of ``batch`` (its ``present`` masks say which modalities each gave)."""

    def embed(self, batch: Any) -> dict[str, torch.Tensor]:
        """Modality name → unit-norm embeddings [B, E] of every modality the batch holds (zeros where absent)."""


def given_modalities(batch: Any, names: list[str]) -> list[list[str]]:
    """Per sample of ``batch``, the names (in ``names`` order) whose present mask is True."""
    size = len(next(iter(batch.present.values()))) if batch.present else 0
    return [[name for name in names if name in batch.present and bool(batch.present[name][i])] for i in range(size)]


__all__ = ["EmbeddingPrediction", "GeneratedText", "GenerationPostprocessor", "Postprocessor", "Prediction",
           "PredictionError", "decoding_options", "given_modalities"]
