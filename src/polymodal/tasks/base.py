"""The Task interface: what a task owns (model building, objective, validation metrics, test metrics, the
saved directory's contents) and what the Trainer, the recipes, Predictor and the report ask of it.

A task is one class in one file under ``tasks/``, registered with ``@TASKS.register(name)``, plus its config
sections (``config.TASK_CONFIGS``). Models return outputs; :meth:`Task.training_output` turns an output into the
loss the Trainer back-propagates (timm's / open_clip's TrainingTask split, LAVIS's tasks/). The kind of a saved
model is its recorded task (``models.persistence.read_model_config``), never guessed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import RunConfig
from .predictions import Postprocessor, PredictionError


class PreparedData(NamedTuple):
    """What :meth:`Task.prepare_data` returns: processors per modality, loaders per split, the label list
    (canonical strings; [] for unlabelled data). A tuple: ``processors, loaders, labels = prepared``."""

    processors: dict[str, Any]
    loaders: dict[str, DataLoader | None]
    labels: list[str]


class Task:
    """Base class: a task whose model computes its own loss (``model(batch).loss``) and is validated by its mean
    loss. Subclasses override what differs. Every method is stateless: one instance serves every run."""

    name: ClassVar[str] = ""
    # The report kind (evaluation.report.sections) that reports on this task's models.
    report_kind: ClassVar[str | None] = None

    # ------------------------------------------------------------------------------------------ model

    def build_model(self, config: RunConfig, labels: list[str]) -> nn.Module:
        """A fresh model for ``config`` (labels: the data's label list, when the task uses one)."""
        raise NotImplementedError(f"task {self.name!r} cannot build a model")

    def load_model(self, directory: Path, payload: dict[str, Any], map_location: str = "cpu", *,
                   trust_remote_code: bool = False) -> nn.Module:
        """The model saved in ``directory`` (``payload``: its config.json, read by models.persistence)."""
        raise NotImplementedError(f"task {self.name!r} cannot load a model")

    def describe(self, model: nn.Module, config: RunConfig, labels: list[str]) -> str:
        """One line printed when training starts."""
        counts = model.parameter_counts() if hasattr(model, "parameter_counts") else {}
        return f"{self.name} model | params {counts.get('total', 0):,}"

    def on_built(self, model: nn.Module, config: RunConfig, labels: list[str]) -> dict[str, Any]:
        """Attach what the saved model records beside its weights (before training); return summary entries."""
        return {}

    # ------------------------------------------------------------------------------------------ data

    def prepare_data(self, config: RunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
                     processors: dict[str, Any] | None = None) -> PreparedData:
        """Processors, loaders and labels of the configured splits."""
        raise NotImplementedError(f"task {self.name!r} has no data preparation")

    # ------------------------------------------------------------------------------------------ objective

    def training_output(self, model: nn.Module, output: Any, batch: Any) -> Any:
        """``output`` of ``model(batch)`` with ``.loss`` (scalar mean) and, where the loss is a sum over items,
        ``.loss_terms`` (objectives.accumulation) set. Base: the model computed its own loss."""
        if getattr(output, "loss", None) is None:
            raise ValueError("the model returned no loss for a training batch: does the data have labels?")
        return output

    def loss_counts(self, model: nn.Module, batch: Any) -> dict[str, float] | None:
        """Items the loss of ``batch`` averages over, per loss term, before running it (for accumulation);
        None = weight micro-batches by samples. Base: the model's own ``loss_counts`` when it has one."""
        counter = getattr(model, "loss_counts", None)
        return None if counter is None else counter(batch)

    def prepare_batch(self, model: nn.Module, batch: Any) -> Any:
        """Draw what the loss depends on before counting (MLM masks): the model's ``prepare_batch`` if any."""
        prepare = getattr(model, "prepare_batch", None)
        return batch if prepare is None else prepare(batch)

    # ------------------------------------------------------------------------------------------ metrics

    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device, autocast=None,
                 config: RunConfig | None = None) -> dict[str, float]:
        """Per-epoch validation metrics (logged as ``val_<name>``). Base: the mean loss."""
        return {"loss": mean_loss(self, model, loader, device, autocast)}

    def test_metrics(self, model: nn.Module, loader: DataLoader, config: RunConfig, device: Any = "cpu",
                     context: dict[str, Any] | None = None) -> dict[str, Any]:
        """The test-split metrics written to metrics.json after training."""
        return {"loss": mean_loss(self, model, loader, torch.device(device), None)}

    # ------------------------------------------------------------------------------------------ predictions

    def postprocessor(self, model: nn.Module, *, model_dir: Path | None = None, threshold: float = 0.5,
                      classnames: list[str] | None = None,
                      templates: list[str] | dict[str, list[str]] | None = None) -> Postprocessor:
        """How ``model``'s outputs become this task's predictions (:class:`~.predictions.Postprocessor`), built once
        per loaded model with its options checked: ``threshold`` (multilabel), ``classnames`` / ``templates``
        (zero-shot), ``model_dir`` (where it was loaded from). Raises PredictionError for an option the task does
        not take. Base: the task makes no predictions."""
        raise PredictionError(f"a {self.name or type(self).__name__} model makes no predictions: its task defines "
                              "no post-processing")

    def predict(self, model: nn.Module, batch: Any, **options: Any) -> list[Any]:
        """The task's prediction per sample of ``batch`` (a processed Batch; ``present`` says which modalities each
        sample gave): ``postprocessor(model, **options).predict(batch)``. Classification: label + probabilities;
        alignment: zero-shot label + probabilities. Raises PredictionError for a sample the task cannot answer."""
        return self.postprocessor(model, **options).predict(batch)


@torch.no_grad()
def mean_loss(task: Task, model: nn.Module, loader: DataLoader, device: torch.device, autocast=None) -> float:
    """Sample-weighted mean of the task's loss over ``loader`` (model in eval mode, restored after).

    Raises ValueError when the loader is empty or a batch gives no loss (unlabelled data)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in loader:
            batch = batch.to(device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                output = task.training_output(model, model(batch), batch)
            total += float(output.loss) * len(batch)
            count += len(batch)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the validation loader yielded no batches")
    return total / count
