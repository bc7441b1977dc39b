"""The classification task: multiclass / binary / multilabel labels from any set of modalities.

Model: encoders → projections → fusion → head (``models.MultimodalModel``; late fusion is one head per modality,
averaged). Objective: cross-entropy (multiclass), BCE-with-logits (binary, multilabel) on the head's logits, summed
over samples with their count so accumulated micro-batches weigh by their share of the step
(``heads.classification_objective``; the classifier's forward adds the same loss when the batch has labels). Validation: accuracy, macro / weighted F1, ROC-AUC, loss. Test: the full
classification report. Saved: the model section, the data section (so ``polymodal eval MODEL_DIR`` finds the test
split) and the finetune section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..heads import CLASSIFICATION_TERM, classification_objective, probabilities
from ..models.classifier import MultimodalModel
from ..registry import TASKS
from .base import PreparedData, Task
from .predictions import Prediction, PredictionError, given_modalities

LOSS_KEY = CLASSIFICATION_TERM  # the loss_terms / loss_counts key of the one classification loss


def head_task(model: nn.Module) -> str:
    """multiclass | binary | multilabel of a classifier (or of a wrapper around one)."""
    task = getattr(model, "task", None)
    if not isinstance(task, str):
        raise ValueError(f"a {type(model).__name__} has no classification head task")
    return task


@TASKS.register("classification")
class ClassificationTask(Task):
    """multiclass / binary / multilabel labels from any set of modalities (fusion + head)"""

    name = "classification"
    report_kind = "classification"

    def build_model(self, config: RunConfig, labels: list[str]) -> MultimodalModel:
        if list(config.model.head.labels) != list(labels) and labels:
            config.model.head = dataclasses.replace(config.model.head, labels=list(labels))
        model = MultimodalModel(config.model)
        model.data_config = absolute_data_paths(dataclasses.asdict(config.data))
        return model

    def load_model(self, directory: Path, payload: dict[str, Any], map_location: str = "cpu", *,
                   trust_remote_code: bool = False) -> nn.Module:
        if payload.get("kind") == "ensemble":
            from ..ensemble.model import EnsembleModel

            return EnsembleModel.from_pretrained(directory, map_location=map_location)
        return MultimodalModel.from_pretrained(directory, map_location=map_location,
                                               trust_remote_code=trust_remote_code)

    def describe(self, model: nn.Module, config: RunConfig, labels: list[str]) -> str:
        counts = model.parameter_counts()
        return (f"model: {', '.join(config.model.modalities)} → {config.model.fusion.name} → {len(labels)} labels | "
                f"params {counts['total']:,} total, {counts['trainable']:,} trainable "
                f"({counts['trainable_share']:.1%})")

    def prepare_data(self, config: RunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
                     processors: dict[str, Any] | None = None) -> PreparedData:
        """Processors, loaders and the label list (from the data when the head names none)."""
        from ..data import build_dataloaders, build_processors

        processors = processors or build_processors(config.model.modalities)
        loaders, labels = build_dataloaders(config, processors, splits=splits)
        if list(config.model.head.labels) != list(labels):  # none given, or given as [0, 1, 2.0]: canonical
            config.model.head = dataclasses.replace(config.model.head, labels=list(labels))
        return PreparedData(processors, loaders, list(config.model.head.labels))

    def training_output(self, model: nn.Module, output: Any, batch: Any) -> Any:
        """Cross-entropy / BCE of the logits against ``batch.labels`` (``loss`` = mean, ``loss_terms`` = sum +
        count). A training wrapper that computes its own loss (distillation) keeps it."""
        if output.loss is not None:  # the classifier added it (labels in the batch), or a wrapper's own loss
            return output
        if batch.labels is None:
            raise ValueError("the model returned no loss for a training batch: does the data have labels?")
        output.loss, output.loss_terms = classification_objective(output.logits, batch.labels, head_task(model))
        return output

    def loss_counts(self, model: nn.Module, batch: Any) -> dict[str, float]:
        own = getattr(model, "loss_counts", None)  # a wrapper with its own loss (distillation) counts its items
        if own is not None:
            return own(batch)
        return {LOSS_KEY: float(len(batch)) if batch.labels is not None else 0.0}

    def validate(self, model, loader, device, autocast=None, config=None) -> dict[str, float]:
        """accuracy, macro_f1, weighted_f1, roc_auc (when defined), loss."""
        from ..metrics.classification import evaluate_classifier

        return evaluate_classifier(model, loader, device, autocast)

    def test_metrics(self, model, loader, config, device="cpu", context=None) -> dict[str, Any]:
        """The full classification report (accuracy, per-class P/R/F1, averages, confusion matrix, ROC-AUC)."""
        from ..metrics.classification import classification_report, predict_loader

        model = model.to(device).eval()
        y_true, probs, ids = predict_loader(model, loader, device)
        report = classification_report(y_true, probs, model.labels, model.task)
        report["num_samples"] = len(ids)
        return report

    def postprocessor(self, model, *, model_dir=None, threshold=0.5, classnames=None,
                      templates=None) -> ClassificationPostprocessor:
        """Label + probabilities from the head (multilabel: every label with probability >= ``threshold``).
        Raises PredictionError for ``classnames`` / ``templates``: a classifier predicts the labels it was trained
        on (zero-shot class names are for alignment models)."""
        if classnames or templates:
            raise PredictionError(
                "--classes / --template (classnames / templates) apply to alignment models (zero-shot); this model is "
                f"a classifier with the labels it was trained on ({', '.join(map(str, model.labels[:5]))}"
                f"{', ...' if len(model.labels) > 5 else ''})")
        return ClassificationPostprocessor(model, threshold)


class ClassificationPostprocessor:
    """Classifier logits → :class:`~.predictions.Prediction`: probabilities by the head's task (softmax for
    multiclass, sigmoid for binary / multilabel, ``heads.probabilities``), the argmax label, or for multilabel every
    label at or over ``threshold``. A binary head with one named (positive) class names the other side "not X"."""

    can_embed = False

    def __init__(self, model: nn.Module, threshold: float = 0.5):
        self.model = model
        self.threshold = float(threshold)
        self.head_task = head_task(model)
        self.labels = list(model.labels)

    def check(self, given: list[str], embed: bool = False) -> None:
        if embed:
            raise PredictionError(
                "embed needs an alignment model (a shared embedding space); this is a classifier "
                f"({type(self.model).__name__}, labels {self.labels[:5]}): use predict")

    @torch.no_grad()
    def predict(self, batch: Any) -> list[Prediction]:
        logits = self.model(batch).logits.float()
        probs = probabilities(logits, self.head_task).cpu()
        labels = self.labels
        if self.head_task == "binary" and len(labels) == 1:
            labels = [f"not {labels[0]}", labels[0]]
        results = []
        for i, used in enumerate(given_modalities(batch, list(self.model.modality_names))):
            row = probs[i].tolist()
            if self.head_task == "multilabel":
                label: str | list[str] = [lab for lab, p in zip(labels, row) if p >= self.threshold]
            else:
                label = labels[int(probs[i].argmax())]
            results.append(Prediction(label=label, probabilities=dict(zip(labels, row)), modalities=used))
        return results

    def embed(self, batch: Any) -> dict[str, Any]:
        self.check([], embed=True)
        return {}


def absolute_data_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Manifest paths as absolute paths, so `polymodal eval MODEL_DIR` finds the test split from any directory."""
    return {
        key: str(Path(value).resolve()) if key in ("train", "val", "test") and value else value
        for key, value in data.items()
    }
