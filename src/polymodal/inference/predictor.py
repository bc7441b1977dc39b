"""Predictor: raw inputs (file paths, arrays, strings) → labels and probabilities, with any subset of modalities.

The model directory's own processors turn raw inputs into the Batch the model was trained on, so a prediction
equals ``model(batch)`` on what the data pipeline would have produced for the same files. A modality that is
not given (or given as None / an empty string, like an empty manifest cell) is carried as absent via the mask.

Every model ``polymodal train`` writes loads here (by the ``task`` recorded in config.json, never guessed), and its
task turns the model's outputs into the task's predictions (``Task.postprocessor``, :mod:`polymodal.tasks`):

- classification (MultimodalModel, EnsembleModel): the head's label and probabilities;
- alignment (AlignmentModel): a zero-shot label for image / audio inputs against the class names and prompt
  templates saved with it (:mod:`polymodal.tasks.zeroshot`), and :meth:`Predictor.embed` for unit-norm embeddings;
- generation (captioning, vqa, transcription, chat: VisionLanguageModel): :meth:`Predictor.generate` (prompt +
  attachments → text, delegating to :class:`~.generate.GenerationPredictor`) and ``predict(row)`` for a row-like
  sample (``messages`` or ``prompt``, ``image`` / ``audio`` paths) → :class:`~polymodal.tasks.predictions.GeneratedText`.

:func:`.batch.predict_manifest` runs a Predictor over an unlabelled manifest (``polymodal predict --data``).

``overrides`` (``--set`` of ``polymodal predict`` / ``eval``) change processor options of the saved model, e.g.
``model.modalities.image.processor.max_pixels=100000000`` to accept a larger image than the saved cap.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..config import ConfigError, parse_override
from ..data.errors import DataError
from ..errors import PolymodalError
from ..models import ModelDirectoryError
from ..tasks import UnknownTaskError, task_of
from ..tasks import load_model as load_saved_model
from ..tasks.predictions import EmbeddingPrediction, Prediction, PredictionError, given_modalities
from ..types import Batch


def is_alignment_model(model: Any) -> bool:
    """True for a model of the alignment task (multi-tower embeddings, no classifier head): its recorded task.
    Kept for user code; polymodal dispatches on ``task_of(model)`` itself."""
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
        # a generation model's attachment (AttachmentConfig) keeps its processor in its encoder's ModalityConfig
        attachment = modalities[name] if not hasattr(modalities[name], "processor") else None
        target = attachment.encoder if attachment is not None else modalities[name]
        if target is None:
            raise ConfigError(f"--set {text!r}: attachment {name!r} has no encoder config (its processor is the "
                              "caller's)")
        options = json.loads(json.dumps(target.processor))  # a deep copy of plain data
        node = options
        for part in path[4:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
        node[path[-1]] = value
        updated = dataclasses.replace(target, processor=options)
        build_processor(updated, name)  # validates now: ConfigError names model.modalities.<name>.processor.<key>
        modalities[name] = updated if attachment is None else dataclasses.replace(attachment, encoder=updated)
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


def check_finite_predictions(predictions: list[Any], source: Any) -> None:
    """Raise NonFiniteModelError when a prediction's numbers (``numbers()``) hold NaN or inf: never NaN
    probabilities with exit 0."""
    for prediction in predictions:
        numbers = prediction.numbers() if hasattr(prediction, "numbers") else []
        if not all(math.isfinite(x) for x in numbers):
            check_finite_outputs(torch.tensor([math.nan]), source)


class ProcessedSample(NamedTuple):
    """One sample through the model's processors: modality name → processed item (``processor.empty()`` where
    absent) and modality name → whether it was given. :meth:`Predictor.collate` stacks them into a Batch."""

    items: dict[str, Any]
    present: dict[str, bool]


def _absent(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


class Predictor:
    """``Predictor("runs/x").predict(image="seven.png", audio="seven.wav")``.

    Inputs are keyed by modality name; a modality kind ("image", "audio", "text") also works when the model has
    exactly one modality of that kind (so ``--image`` reaches a modality named "photo").

    ``model``: a model / run directory or a loaded polymodal model (MultimodalModel, EnsembleModel,
    AlignmentModel, ...). Its task (``task_of(model)``, the ``task`` recorded in config.json) says what a prediction
    is: ``predict`` returns the task's prediction type (:class:`~polymodal.tasks.predictions.Prediction`: label +
    probabilities; a generation model: :class:`~polymodal.tasks.predictions.GeneratedText`, and :meth:`generate` /
    :meth:`chat` for prompts). ``threshold``: multilabel cut-off. ``overrides``: processor options
    (:func:`apply_processor_overrides`). ``classnames`` / ``templates`` (one list, or per modality name): the
    zero-shot classes / prompts of an alignment model instead of those saved with it.

    Raises ConfigError / FileNotFoundError for a directory that holds no model, UnknownTaskError for a model of a
    task this install lacks, PredictionError for options the task does not take (``classnames`` for a classifier).
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
        self.task = task_of(self.model)
        model_dir = self.source if isinstance(self.source, Path) else None
        self.postprocessor = self.task.postprocessor(self.model, model_dir=model_dir, threshold=threshold,
                                                     classnames=classnames, templates=templates)
        self.is_alignment = self.task.name == "alignment"  # kept for user code: the task says it
        self.zeroshot = getattr(self.postprocessor, "zeroshot", None)  # kept for user code (alignment models)
        # generation models answer prompts: rows in, text out (generate / predict), no modality → tensor path
        self.generates = bool(getattr(self.postprocessor, "generates", False))
        self._generator: Any = None
        if self.generates:
            self._by_kind: dict[str, str] = {}
            return
        names = self.model.modality_names
        kinds = [self.model.config.modalities[name].kind for name in names]
        self._by_kind = {kind: name for kind, name in zip(kinds, names) if kinds.count(kind) == 1}

    @property
    def task_name(self) -> str:
        """The model's task: "classification", "alignment", ..."""
        return self.task.name

    @property
    def head_task(self) -> str | None:
        """multiclass | binary | multilabel for a classifier, None for a task without a classification head."""
        return self.postprocessor.head_task

    @property
    def can_embed(self) -> bool:
        """Whether :meth:`embed` works (a model with a shared embedding space)."""
        return bool(self.postprocessor.can_embed)

    @property
    def labels(self) -> list[str]:
        """The labels a prediction chooses from (an alignment model: its zero-shot class names)."""
        return list(self.postprocessor.labels)

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

    def check(self, sample: dict[str, Any], embed: bool = False) -> dict[str, Any]:
        """``sample`` with kinds mapped onto modality names, once the task can answer it: ValueError for an unknown
        modality or an empty sample, PredictionError for what the task cannot answer (e.g. a text-only sample for
        a zero-shot label, ``embed`` of a classifier). Nothing is decoded here."""
        if embed and not self.postprocessor.can_embed:
            self.postprocessor.check([], embed=True)  # raises, saying what the model does instead
        if self.generates:
            return self._generation_row(sample)
        resolved = self._resolve(sample)
        self.postprocessor.check([name for name in self.model.modality_names if not _absent(resolved.get(name))],
                                 embed=embed)
        return resolved

    def process(self, sample: dict[str, Any]) -> ProcessedSample:
        """One raw sample through the model's processors (header checks first: size caps refuse a huge file before
        decoding). Raises ValueError for unknown modalities, DataError naming the modality for a bad input."""
        sample = self._resolve(sample)
        items, present = {}, {}
        for name in self.model.modality_names:
            processor = self.model.processors[name]
            raw = sample.get(name)
            if _absent(raw):
                items[name], present[name] = processor.empty(), False
                continue
            try:
                processor.check(raw)
                items[name] = processor(raw)
            except DataError as err:
                raise DataError(f"{name}: {err}") from err
            present[name] = True
        return ProcessedSample(items, present)

    def collate(self, processed: list[ProcessedSample], ids: list[str] | None = None) -> Batch:
        """Processed samples → the Batch the model was trained on (absent modalities: mask False)."""
        inputs, present = {}, {}
        for name in self.model.modality_names:
            inputs[name] = self.model.processors[name].collate([p.items[name] for p in processed])
            present[name] = torch.tensor([p.present[name] for p in processed], dtype=torch.bool)
        return Batch(inputs=inputs, present=present, ids=list(ids) if ids else [str(i) for i in range(len(processed))])

    def make_batch(self, samples: list[dict[str, Any]]) -> Batch:
        """Raw samples → the Batch the model was trained on (absent modalities: processor.empty(), mask False).
        A generation model: row-like samples → processed samples (``generation.data.SampleBatch``); paths are
        read as given (relative to the working directory)."""
        if self.generates:
            dataset = self.generator.dataset([self._generation_row(s) for s in samples],
                                             source="sample" if len(samples) == 1 else "samples")
            return dataset.collate([dataset[i] for i in range(len(dataset))])
        processed = []
        for index, sample in enumerate(samples):
            try:
                processed.append(self.process(sample))
            except DataError as err:
                if len(samples) == 1:
                    raise
                raise DataError(f"sample {index}: {err}") from err
        return self.collate(processed)

    def _checked(self, samples: list[dict[str, Any]], embed: bool) -> list[dict[str, Any]]:
        resolved = []
        for index, sample in enumerate(samples):
            try:
                resolved.append(self.check(sample, embed=embed))
            except PredictionError as err:
                if len(samples) == 1 or (embed and not self.postprocessor.can_embed):
                    raise
                raise PredictionError(f"sample {index}: {err}") from err
        return resolved

    @torch.no_grad()
    def predict_processed(self, batch: Batch, embed: bool = False) -> list[Any]:
        """The task's prediction for each sample of a processed ``batch`` (:meth:`collate`): a Prediction (label +
        probabilities), or with ``embed`` an EmbeddingPrediction of the modalities each sample gave. Raises
        NonFiniteModelError for NaN / inf outputs, PredictionError for what the task cannot answer."""
        batch = batch.to(self.device)
        if embed:
            if not self.postprocessor.can_embed:
                self.postprocessor.check([], embed=True)
            embeddings = self.postprocessor.embed(batch)
            given = given_modalities(batch, list(self.model.modality_names))
            predictions: list[Any] = [EmbeddingPrediction({name: embeddings[name][i] for name in names}, names)
                                      for i, names in enumerate(given)]
        else:
            predictions = self.postprocessor.predict(batch)
        check_finite_predictions(predictions, self.source)
        return predictions

    def predict_batch(self, samples: list[dict[str, Any]]) -> list[Prediction]:
        """One prediction per sample (a dict modality name or kind → raw input), of the model's task. A generation
        model: row-like samples (see :meth:`predict`), generated in one batch → GeneratedText each."""
        if self.generates:
            return self.predict_processed(self.make_batch(samples))
        return self.predict_processed(self.make_batch(self._checked(samples, embed=False)))

    @torch.no_grad()
    def embed_batch(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Models with a shared embedding space (alignment): modality name → unit-norm embeddings [B, E] (rows of
        absent inputs are zeros), for every modality given in at least one sample. Raises PredictionError for a
        model without one (a classifier)."""
        batch = self.make_batch(self._checked(samples, embed=True)).to(self.device)
        return self.postprocessor.embed(batch)

    def embed(self, sample: dict[str, Any] | None = None, **modalities: Any) -> dict[str, torch.Tensor]:
        """One sample → modality name → its unit-norm embedding [E] (alignment models), e.g.
        ``embed(image="seven.png", text="a handwritten seven")``; cosine similarity = dot product."""
        embeddings = self.embed_batch([dict(sample or {}, **modalities)])
        return {name: emb[0] for name, emb in embeddings.items()}

    def predict(self, sample: dict[str, Any] | None = None, **modalities: Any) -> Prediction:
        """One sample, as a dict or keyword arguments: ``predict(image="x.png", text="...")``.

        A generation model takes a row-like sample: ``messages`` (a conversation ending with a user turn, or with
        the assistant turn to redo, which is dropped) or ``prompt`` (``text`` works too), plus its attachments by
        modality name (``image="x.png"``, a list for several) → GeneratedText (``.text``). Raises DataError naming
        the field for a malformed sample or an unreadable file."""
        sample = dict(sample or {}, **modalities)
        return self.predict_batch([sample])[0]

    # ------------------------------------------------------------------------------------------ generation

    @property
    def generator(self) -> Any:
        """The :class:`~.generate.GenerationPredictor` of a generation model (the one implementation of prompt +
        attachments → text). Raises PredictionError for a model that does not generate text."""
        if not self.generates:
            raise PredictionError(f"a {self.task_name} model does not generate text",
                                  hint="use predict() for its predictions (`polymodal predict`)")
        if self._generator is None:
            from .generate import GenerationPredictor

            self._generator = GenerationPredictor(self.model, device=self.device)
        return self._generator

    def generate(self, prompt: str, *, image: Any = None, audio: Any = None, attachments: dict[str, Any] | None = None,
                 stream: bool = False, **decoding: Any) -> Any:
        """Generation models: the answer to ``prompt`` about ``image`` / ``audio`` (or ``attachments`` by modality
        name), decoded with the saved defaults updated by ``decoding`` (max_new_tokens, num_beams, do_sample,
        temperature, top_k, top_p, repetition_penalty, stop_strings); ``stream=True``: an iterator of text pieces.
        Same as ``GenerationPredictor(model).generate``. Raises PredictionError for a model of another task,
        DataError for an unreadable input."""
        return self.generator.generate(prompt, image=image, audio=audio, attachments=attachments, stream=stream,
                                       **decoding)

    def chat(self, messages: list[dict[str, Any]], attachments: dict[str, list[Any]] | None = None, *,
             stream: bool = False, **decoding: Any) -> Any:
        """Generation models: the next assistant answer of ``messages`` (see ``GenerationPredictor.chat``)."""
        return self.generator.chat(messages, attachments, stream=stream, **decoding)

    def _generation_row(self, sample: dict[str, Any]) -> dict[str, Any]:
        """A row-like sample of a generation model: ``text`` read as the prompt; PredictionError for an
        attachment kind the model does not read (``audio`` for an image-only model)."""
        row = dict(sample)
        fields = set(self.generator.columns.values())
        if "text" in row and "prompt" not in row and "messages" not in row and "text" not in fields:
            row["prompt"] = row.pop("text")
        unread = [key for key in ("image", "audio") if row.get(key) is not None and key not in fields]
        if unread:
            raise PredictionError(f"this {self.task_name} model reads {list(self.generator.columns)} attachments, not "
                                  f"{unread[0]!r}", modalities=unread)
        return row


__all__ = ["EmbeddingPrediction", "NonFiniteModelError", "Prediction", "PredictionError", "ProcessedSample",
           "Predictor", "apply_processor_overrides", "check_finite_model", "is_alignment_model", "load_model",
           "resolve_model_dir"]
