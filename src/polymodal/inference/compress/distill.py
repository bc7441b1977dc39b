"""Knowledge distillation: train a smaller student classifier on a trained teacher's soft targets.

Loss per sample (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015):

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) · CE(student, label)

multiclass; binary / multilabel use the sigmoid analogue (BCE against the teacher's sigmoid(logits / T), × T²).
The T² factor keeps the soft term's gradients on the scale of the hard term's as T changes (section 2 of the paper).

The student trains with polymodal's own Trainer (checkpoints, NaN guard, best/ by validation loss): it sees the
same batches as the teacher because it is built with the teacher's processors (modalities, their processor
options and labels come from the teacher; the student config chooses encoders, fusion and head sizes).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ConfigError
from ...heads import classification_loss_sum
from ...objectives.accumulation import LossTerm
from ...types import Batch, ModelOutput

LOSS_KEY = "classification"  # the key MultimodalModel uses: one loss the Trainer normalises per sample


def soft_target_loss_sum(student: torch.Tensor, teacher: torch.Tensor, task: str, temperature: float) -> torch.Tensor:
    """Σ over samples of T² · (KL for multiclass, BCE-with-soft-targets averaged over labels otherwise).
    student, teacher: logits [B, C] (binary [B, 1])."""
    t = float(temperature)
    if task == "multiclass":
        per_sample = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), reduction="none",
                              log_target=True).sum(-1)
    else:
        per_sample = F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t),
                                                        reduction="none").mean(-1)
    return per_sample.sum() * t * t


class DistillationModel(nn.Module):
    """student + frozen teacher behind the interface the Trainer fits: ``forward(batch)`` → ModelOutput whose loss
    is the distillation loss, ``loss_counts``; ``save_pretrained`` saves the student alone (best/ is the student).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5):
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"distill temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill alpha must be in [0, 1], got {alpha}")
        self.student = student
        self.teacher = teacher.eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.temperature, self.alpha = float(temperature), float(alpha)

    # The student's task and labels: the Trainer's validation then reports the student's accuracy / macro-F1, so the
    # usual monitor (val_accuracy) picks best/.
    @property
    def task(self) -> str:
        return self.student.task

    @property
    def labels(self) -> list[str]:
        return self.student.labels

    def train(self, mode: bool = True) -> DistillationModel:
        super().train(mode)
        self.teacher.eval()  # soft targets always come from the deterministic teacher
        return self

    def forward(self, batch: Batch) -> ModelOutput:
        out = self.student(batch)
        with torch.no_grad():
            teacher_logits = self.teacher(batch).logits
        task = self.student.task
        total = self.alpha * soft_target_loss_sum(out.logits, teacher_logits, task, self.temperature)
        count = int(out.logits.shape[0])
        if batch.labels is not None and self.alpha < 1.0:
            hard, _ = classification_loss_sum(out.logits, batch.labels, task)
            total = total + (1.0 - self.alpha) * hard
        return ModelOutput(logits=out.logits, loss=total / max(count, 1), fused=out.fused,
                           modality_outputs=out.modality_outputs, loss_terms={LOSS_KEY: LossTerm(total, float(count))})

    def loss_counts(self, batch: Batch) -> dict[str, float]:
        return {LOSS_KEY: float(len(batch))}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        return self.student.save_pretrained(directory)


def student_config(teacher: nn.Module, student: dict[str, Any]) -> dict[str, Any]:
    """The student's ModelConfig dict: encoders / fusion / head from ``student``; each modality's kind, processor
    options (and Hugging Face checkpoint, whose tokenizer / feature extractor makes the inputs) and the labels / task
    from the teacher, so both read the same batches. ``student["modalities"]`` may name a subset of the teacher's;
    none given = all of them with the default from-scratch encoders. Raises ConfigError naming the key otherwise."""
    spec = copy.deepcopy(dict(student))
    given = spec.get("modalities") or {}
    unknown = [name for name in given if name not in teacher.config.modalities]
    if unknown:
        raise ConfigError(f"student.modalities: {unknown} are not modalities of the teacher "
                          f"({', '.join(teacher.config.modalities)}); a student reads the teacher's inputs")
    modalities = {}
    for name, teacher_cfg in teacher.config.modalities.items():
        if given and name not in given:
            continue
        entry = dict(given.get(name) or {})
        if "processor" in entry and entry["processor"] != teacher_cfg.processor:
            raise ConfigError(f"student.modalities.{name}.processor: a student takes the teacher's processor options "
                              f"({teacher_cfg.processor}); leave it out")
        if teacher_cfg.pretrained:
            if entry.get("encoder", "auto") not in ("auto", "hf"):
                raise ConfigError(f"student.modalities.{name}.encoder: the teacher's {name} inputs come from the "
                                  f"Hugging Face processor of {teacher_cfg.pretrained}; the student must keep an 'hf' "
                                  "encoder there (or leave that modality out)")
            entry.setdefault("pretrained", teacher_cfg.pretrained)
        entry.update(kind=teacher_cfg.kind, processor=copy.deepcopy(teacher_cfg.processor))
        modalities[name] = entry
    head = dict(spec.get("head") or {})
    head.update(task=teacher.task, labels=list(teacher.labels))
    spec.update(modalities=modalities, head=head)
    return spec


def distill(teacher_dir: str | os.PathLike, student: dict[str, Any], out_dir: str | os.PathLike, *,
            train: dict[str, Any] | None = None, data: dict[str, Any] | None = None, temperature: float = 2.0,
            alpha: float = 0.5, verbose: bool = False) -> dict[str, Any]:
    """Train ``student`` (a ModelConfig-shaped dict: encoders, fusion, head) on the teacher saved in ``teacher_dir``.

    ``data``: the data section (default: the teacher's own, saved with it; batch_size lives there); ``train``: the
    train section (epochs, lr, seed, ...). ``out_dir`` is a run directory with the Trainer's layout; ``out_dir/best``
    is the student, loadable with ``MultimodalModel.from_pretrained`` / Predictor. Returns ``{"run_dir",
    "model_dir", "teacher": {"parameters", "test"}, "student": {"parameters", "test"}}`` (test: the classification
    report, when the data has a test split). Raises ConfigError for a student that does not fit the teacher or a
    teacher that is not a classifier; the Trainer's errors (diverged run, locked run directory) as for train.
    """
    from ...config import Config, from_dict
    from ...models import MultimodalModel
    from ...tasks import task_of
    from ...training import Trainer, seed_everything
    from ...training.run_lock import RunLock
    from ..predictor import load_model

    teacher, _ = load_model(teacher_dir)
    task = task_of(teacher)  # the recorded task of the saved model, never guessed
    if task.name != "classification":
        raise ConfigError(f"{teacher_dir}: distillation needs a classifier teacher; this is a {task.name} model")
    data_section = data or teacher.data_config
    if not data_section:
        raise ConfigError(f"{teacher_dir} records no data section: pass data={{'name': 'spoken-digits'}} or a "
                          "manifest (data.train / data.val / data.test)")
    sections = {"data": data_section, "train": {"progress": False, **(train or {}), "out_dir": str(out_dir)}}
    config = from_dict(Config, {"model": student_config(teacher, student), **sections})
    # The batches carry every teacher modality (its soft targets need them all); a student built on a subset
    # ignores the others, as any MultimodalModel does.
    teacher_modalities = {name: dataclasses.asdict(cfg) for name, cfg in teacher.config.modalities.items()}
    data_config = from_dict(Config, {"model": {"modalities": teacher_modalities,
                                               "head": {"task": teacher.task, "labels": list(teacher.labels)}},
                                     **sections})
    run_dir = Path(out_dir)
    with RunLock(run_dir):
        seed_everything(config.train.seed)
        processors, loaders, _ = task.prepare_data(data_config)
        model = MultimodalModel(config.model)
        model._processors = {name: processors[name] for name in config.model.modalities}
        model.data_config = teacher.data_config if data is None else dict(data)
        wrapper = DistillationModel(model, teacher, temperature, alpha)
        # the classification task: its validation metrics (the student's accuracy, the default monitor) and the
        # wrapper's own distillation loss (ClassificationTask.training_output keeps a loss the model computed)
        trainer = Trainer(wrapper, config.train, loaders["train"], val_loader=loaders.get("val"), run_dir=run_dir,
                          config=config, verbose=verbose, task=task)
        fit = trainer.fit()
    best_dir = run_dir / "best"
    best = MultimodalModel.from_pretrained(best_dir) if (best_dir / "model.safetensors").exists() else model
    summary: dict[str, Any] = {"run_dir": str(run_dir), "model_dir": str(best_dir), "fit": fit,
                               "temperature": temperature, "alpha": alpha,
                               "teacher": {"parameters": teacher.parameter_counts()},
                               "student": {"parameters": best.parameter_counts()}}
    if "test" in loaders:
        summary["teacher"]["test"] = task.test_metrics(teacher, loaders["test"], config)
        summary["student"]["test"] = task.test_metrics(best, loaders["test"], config)
    return summary
