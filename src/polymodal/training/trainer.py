"""The training loop: AdamW + warmup/decay, accumulation, clipping, autocast, validation, best model,
early stopping, metric logs and crash-safe checkpoints with exact resume.

Exact resume means: training N steps straight and training k steps, stopping, then resuming for N−k steps
give the same weights and the same loss curve. Three things make that hold:
  - the data order of an epoch is a function of (seed, epoch) alone (EpochShuffleSampler), and a resumed
    epoch starts at the first batch not yet consumed;
  - every RNG the step draws from (torch, python, numpy, modality dropout) is saved with the checkpoint;
  - checkpoints are only written on optimizer-step boundaries, with the optimizer / scheduler / scaler state.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError, TrainConfig, save_config
from .checkpoint import (
    is_complete_checkpoint,
    load_checkpoint,
    recover_directory,
    save_checkpoint,
    save_model_weights,
)
from .logging import MetricLogger
from .modality_dropout import ModalityDropout
from .optim import build_optimizer, build_scheduler
from .reproducibility import configure_determinism, make_resumable_loader

EvaluateFn = Callable[[nn.Module, DataLoader, torch.device], dict[str, float]]


class TrainingDivergedError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available here (use cpu or auto)")
    return device


def default_evaluate(model: nn.Module, loader: DataLoader, device: torch.device, autocast=None) -> dict[str, float]:
    """Classifiers: accuracy / macro-F1 / loss (evaluation.evaluate_classifier); other models: mean loss."""
    if hasattr(model, "task") and hasattr(model, "labels"):
        from ..evaluation.classification import evaluate_classifier

        return evaluate_classifier(model, loader, device, autocast)
    return {"loss": mean_loss(model, loader, device, autocast)}


@torch.no_grad()
def mean_loss(model: nn.Module, loader: DataLoader, device: torch.device, autocast=None) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in loader:
            batch = batch.to(device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                output = model(batch)
            if output.loss is None:
                raise ValueError("the model returned no loss on a validation batch: does the data have labels?")
            total += float(output.loss) * len(batch)
            count += len(batch)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the validation loader yielded no batches")
    return total / count


class Trainer:
    """Fit a model whose ``forward(batch)`` returns an object with ``.loss``.

    run_dir layout: ``checkpoints/last/`` (resume state), ``best/`` (best model by ``train.monitor``, saved
    with ``save_pretrained``), ``metrics.jsonl`` / ``metrics.csv`` (step and epoch rows), ``config.yaml``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_config: TrainConfig,
        train_loader: DataLoader,
        val_loader: DataLoader | None = None,
        run_dir: str | Path | None = None,
        config: Any = None,
        evaluate_fn: EvaluateFn | None = None,
    ):
        self.cfg = train_config
        if self.cfg.grad_accum < 1:
            raise ConfigError(f"train.grad_accum must be >= 1, got {self.cfg.grad_accum}")
        self.device = resolve_device(self.cfg.device)
        self.model = model.to(self.device)
        self.run_dir = Path(run_dir or self.cfg.out_dir)
        self.config = config
        self.evaluate_fn = evaluate_fn
        self.val_loader = val_loader
        self.train_loader, self.sampler = make_resumable_loader(train_loader, self.cfg.seed)
        # Fixed here: len(loader) shrinks while a resumed epoch's sampler starts part-way through.
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch == 0:
            raise ValueError("the training loader yields no batches: is the training split empty?")
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.cfg.grad_accum)
        self.total_steps = self.cfg.max_steps or self.cfg.epochs * self.steps_per_epoch
        if self.total_steps < 1:
            raise ConfigError("train.epochs or train.max_steps must give at least one optimizer step")
        self.max_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = build_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay, self.cfg.encoder_lr)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.schedule, self.total_steps, self.cfg.warmup_ratio)
        self.autocast_dtype = self._autocast_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.modality_dropout = (
            ModalityDropout(self.cfg.modality_dropout, seed=self.cfg.seed) if self.cfg.modality_dropout > 0 else None
        )
        self.monitor, self.monitor_mode = self._resolve_monitor()
        self.checkpoint_dir = self.run_dir / "checkpoints" / "last"
        self.best_dir = self.run_dir / "best"
        self.state = self._fresh_state()

    # ------------------------------------------------------------------------------------------ setup

    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.cfg.precision
        if precision == "fp32":
            return None
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 autocast needs a CUDA device; use fp32 (or bf16) on CPU")
        if precision == "bf16" and self.device.type == "cpu":
            warnings.warn("bf16 autocast on CPU is often slower than fp32 without AMX support", stacklevel=3)
        return torch.bfloat16 if precision == "bf16" else torch.float16

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _resolve_monitor(self) -> tuple[str, str]:
        if self.val_loader is None:
            # Nothing to validate on: the best model is the one with the lowest epoch-mean training loss.
            return "train_loss", "min"
        if not self.cfg.monitor.startswith(("val_", "train_")):
            raise ConfigError(f"train.monitor: {self.cfg.monitor!r} must start with val_ or train_ (e.g. val_accuracy)")
        return self.cfg.monitor, self.cfg.monitor_mode

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "epoch": 0,  # the epoch in progress (0-based)
            "batches_done": 0,  # batches of that epoch already consumed
            "global_step": 0,  # optimizer steps
            "epoch_loss_sum": 0.0,
            "epoch_loss_count": 0,
            "best_metric": None,
            "best_epoch": None,
            "bad_epochs": 0,
            "stopped_early": False,
            "finished": False,
            "history": [],
        }

    # ------------------------------------------------------------------------------------------ fit

    def fit(self, resume: bool = False, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train to the end (or to early stopping); return the summary of the run.

        resume: continue from ``run_dir/checkpoints/last`` (error if there is none).
        stop_after_steps: checkpoint and return after this many optimizer steps in this call — a controlled
            interruption, used to test resume (and handy to run a long job in slices).
        """
        configure_determinism(self.cfg.deterministic)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        else:
            self._clear_previous_run()
            if self.config is not None:
                save_config(self.config, self.run_dir / "config.yaml")
        self.logger = MetricLogger(self.run_dir)
        if resume:
            self.logger.truncate_after(self.state["global_step"], self.state["epoch"])
        self._steps_this_call = 0
        self.model.train()
        try:
            while not self.state["finished"]:
                epoch = self.state["epoch"]
                if self.sampler is not None:
                    start = min(self.state["batches_done"] * self.train_loader.batch_size, self.sampler.num_samples)
                    self.sampler.set_epoch(epoch, start=start)
                    batches = iter(self.train_loader)
                else:  # a custom sampler: replay the epoch and skip what was consumed
                    batches = iter(self.train_loader)
                    for _ in range(self.state["batches_done"]):
                        next(batches)
                if self._run_epoch(batches, stop_after_steps):
                    self._save_checkpoint()
                    return self.summary(interrupted=True)
                self._end_epoch()
                self._save_checkpoint()
        finally:
            self.logger.close()
        return self.summary()

    def _run_epoch(self, batches, stop_after_steps: int | None) -> bool:
        """Train through the rest of an epoch; True when stopped early by ``stop_after_steps``."""
        cfg, state = self.cfg, self.state
        remaining = self.batches_per_epoch - state["batches_done"]
        progress = self._progress(remaining, state["epoch"])
        pending = 0  # micro-batches accumulated since the last optimizer step
        self.optimizer.zero_grad(set_to_none=True)
        for batch in batches:
            if self.modality_dropout is not None:
                batch = self.modality_dropout(batch, training=True)
            batch = batch.to(self.device)
            with self.autocast():
                output = self.model(batch)
            loss = output.loss
            if loss is None:
                raise ValueError("the model returned no loss for a training batch: does the data have labels?")
            self._check_finite(loss, "loss", batch)
            # The last, possibly short, group of an epoch is averaged over its own size.
            group = min(cfg.grad_accum, self.batches_per_epoch - (state["batches_done"] - pending))
            self.scaler.scale(loss / group).backward()
            pending += 1
            state["batches_done"] += 1
            state["epoch_loss_sum"] += float(loss.detach()) * len(batch)
            state["epoch_loss_count"] += len(batch)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if pending == group:
                self._optimizer_step(batch)
                pending = 0
                self._steps_this_call += 1
                if state["global_step"] >= self.total_steps:
                    break
                if stop_after_steps is not None and self._steps_this_call >= stop_after_steps:
                    if progress is not None:
                        progress.close()
                    return True
        if progress is not None:
            progress.close()
        return False

    def _optimizer_step(self, batch) -> None:
        state = self.state
        if self.cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self._trainable, self.cfg.clip_grad_norm)
            if self.autocast_dtype != torch.float16:  # with fp16 the scaler skips inf steps by design
                self._check_finite(norm, "gradient norm", batch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state["global_step"] += 1
        if self.cfg.log_every and state["global_step"] % self.cfg.log_every == 0:
            self.logger.log(
                {
                    "kind": "step",
                    "epoch": state["epoch"],
                    "step": state["global_step"],
                    "loss": state["epoch_loss_sum"] / max(1, state["epoch_loss_count"]),
                    "lr": self.scheduler.get_last_lr()[0],
                }
            )

    @property
    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _check_finite(self, value: torch.Tensor, what: str, batch) -> None:
        if torch.isfinite(value).all():
            return
        kept = (
            f"the last good checkpoint is kept at {self.checkpoint_dir}"
            if is_complete_checkpoint(self.checkpoint_dir)
            else "no checkpoint had been written yet"
        )
        ids = ", ".join(batch.ids[:5]) if batch.ids else "?"
        raise TrainingDivergedError(
            f"training diverged: the {what} became {float(value.detach())} at epoch {self.state['epoch'] + 1}, "
            f"optimizer step {self.state['global_step'] + 1} (batch samples {ids}, ...); {kept}. "
            "Try a lower train.lr, train.clip_grad_norm, or precision fp32."
        )

    def _end_epoch(self) -> None:
        state, started = self.state, time.perf_counter()
        row: dict[str, Any] = {
            "kind": "epoch",
            "epoch": state["epoch"],
            "step": state["global_step"],
            "train_loss": state["epoch_loss_sum"] / max(1, state["epoch_loss_count"]),
            "lr": self.scheduler.get_last_lr()[0],
        }
        if self.val_loader is not None:
            evaluate = self.evaluate_fn or (lambda m, loader, d: default_evaluate(m, loader, d, self.autocast))
            metrics = evaluate(self.model, self.val_loader, self.device)
            self.model.train()
            row.update({f"val_{key}": float(value) for key, value in metrics.items() if value is not None})
            row["val_seconds"] = time.perf_counter() - started
        if self.monitor not in row:
            available = sorted(k for k in row if k.startswith(("val_", "train_")))
            raise ConfigError(f"train.monitor: {self.monitor!r} is not a logged metric; available: {available}")
        value = row[self.monitor]
        best = state["best_metric"]
        improved = best is None or (value > best if self.monitor_mode == "max" else value < best)
        if improved:
            state["best_metric"], state["best_epoch"], state["bad_epochs"] = value, state["epoch"], 0
            save_model_weights(self.model, self.best_dir)
        else:
            state["bad_epochs"] += 1
        row["best"] = improved
        self.logger.log(row)
        state["history"].append(row)
        if self.cfg.progress:
            shown = {k: v for k, v in row.items() if k.startswith(("train_loss", "val_")) and k != "val_seconds"}
            text = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
            print(f"epoch {state['epoch'] + 1}/{self.max_epochs}  {text}{'  *' if improved else ''}", flush=True)
        patience = self.cfg.early_stopping_patience
        state["stopped_early"] = bool(patience and state["bad_epochs"] >= patience)
        state["epoch"] += 1
        state["batches_done"] = 0
        state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
        state["finished"] = (
            state["stopped_early"] or state["global_step"] >= self.total_steps or state["epoch"] >= self.max_epochs
        )

    def _progress(self, total: int, epoch: int):
        if not self.cfg.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{self.max_epochs}", leave=False, dynamic_ncols=True)

    # ------------------------------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        state = dict(self.state)
        if self.modality_dropout is not None:
            state["modality_dropout_rng"] = self.modality_dropout.state_dict()["generator"].tolist()
        save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.scaler, state)

    def _clear_previous_run(self) -> None:
        """A fresh run in a used directory starts a new log; old checkpoints would otherwise mix with it."""
        for name in ("metrics.jsonl", "metrics.csv"):
            (self.run_dir / name).unlink(missing_ok=True)
        if self.checkpoint_dir.exists():
            shutil.rmtree(self.checkpoint_dir)

    def _resume(self) -> None:
        recover_directory(self.checkpoint_dir, is_complete_checkpoint)
        if not is_complete_checkpoint(self.checkpoint_dir):
            raise FileNotFoundError(
                f"cannot resume: no complete checkpoint in {self.checkpoint_dir} (start without --resume)"
            )
        state = load_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.scaler)
        rng = state.pop("modality_dropout_rng", None)
        if rng is not None and self.modality_dropout is not None:
            self.modality_dropout.load_state_dict({"generator": torch.tensor(rng, dtype=torch.uint8)})
        state.pop("rng", None)
        state.pop("format_version", None)
        self.state = {**self._fresh_state(), **state}

    # ------------------------------------------------------------------------------------------ result

    def summary(self, interrupted: bool = False) -> dict[str, Any]:
        state = self.state
        return {
            "monitor": self.monitor,
            "monitor_mode": self.monitor_mode,
            "best_metric": state["best_metric"],
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "global_step": state["global_step"],
            "total_steps": self.total_steps,
            "stopped_early": state["stopped_early"],
            "interrupted": interrupted,
            "history": state["history"],
        }
