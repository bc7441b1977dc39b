"""The training loop: AdamW + warmup/decay, accumulation, clipping, autocast, validation, best model,
early stopping, metric logs and crash-safe checkpoints with exact resume.

Exact resume means: training N steps straight and training k steps, stopping, then resuming for N−k steps
give the same weights and the same loss curve. Three things make that hold:
  - the data order of an epoch is a function of (seed, epoch) alone (EpochShuffleSampler), and a resumed
    epoch starts at the first batch not yet consumed;
  - every RNG the step draws from (torch, python, numpy, modality dropout) is saved with the checkpoint;
  - checkpoints are only written on optimizer-step boundaries, with the optimizer / scheduler / scaler state.

Under torchrun (WORLD_SIZE > 1, see :mod:`.distributed`) the same loop trains one model on every rank: the
forward runs through DistributedDataParallel, each rank reads its shard of the (seed, epoch) order, losses are
summed over ranks for the logs, validation runs on rank 0 and is broadcast, and only rank 0 writes the run
directory (lock, logs, checkpoints, best/). Every rank restores the same checkpoint on resume.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError, TrainConfig, save_config
from ..tasks.base import Task
from ..tasks.base import mean_loss as _mean_loss
from ..threads import apply_thread_policy, policy_enabled, tuner_for
from . import distributed as dist_utils
from . import fsdp
from .accumulation import share_of_step, step_micro_batches
from .checkpoint import (
    is_complete_checkpoint,
    load_checkpoint,
    recover_directory,
    restore_torch_rng_state,
    save_checkpoint,
    torch_rng_state,
)
from .interrupt import StopSignals
from .logging import MetricLogger, make_progress
from .modality_dropout import ModalityDropout
from .optim import build_optimizer, build_scheduler
from .reproducibility import (
    configure_determinism,
    make_resumable_loader,
    python_numpy_rng_state,
    restore_python_numpy_rng_state,
)
from .resume_checks import check_resume_config, warn_if_finished
from .run_guards import RunGuards, TrainingDivergedError  # noqa: F401 (its historic home: re-exported)
from .run_lock import RunLock
from .trackers import open_trackers, resolve_trackers
from .write_errors import translate_write_errors

EvaluateFn = Callable[[nn.Module, DataLoader, torch.device], dict[str, float]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available here (use cpu or auto)")
    return device


def default_evaluate(model: nn.Module, loader: DataLoader, device: torch.device, autocast=None) -> dict[str, float]:
    """Validation of a model whose forward returns its own loss (no task given): the mean loss."""
    return {"loss": mean_loss(model, loader, device, autocast)}


def mean_loss(model: nn.Module, loader: DataLoader, device: torch.device, autocast=None) -> float:
    """Sample-weighted mean of ``model(batch).loss`` over ``loader`` (see tasks.base.mean_loss)."""
    return _mean_loss(Task(), model, loader, device, autocast)


def _task_of_model(model: nn.Module) -> Task:
    from ..tasks import UnknownTaskError, task_of

    try:
        return task_of(model)
    except UnknownTaskError:
        return Task()


class Trainer(RunGuards):
    """Fit a model for a task: ``task.training_output(model, model(batch), batch).loss`` is minimised and
    ``task.validate`` gives the validation metrics (``evaluate_fn`` overrides it). The Trainer knows no task by
    name; without a task the model's forward must return its own ``.loss`` and validation is the mean loss.

    run_dir layout: ``checkpoints/last/`` (resume state), ``best/`` (best model by ``train.monitor``, saved
    with ``save_pretrained``), ``metrics.jsonl`` / ``metrics.csv`` (step and epoch rows), ``config.yaml``,
    and ``.polymodal.lock`` while a run owns the directory (see :mod:`.run_lock`).

    verbose: print one summary line per epoch (whatever ``train.progress`` says; that switches the per-step
    progress display only).
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
        verbose: bool = True,
        epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
        task: Task | None = None,
    ):
        dist_utils.init_distributed(train_config.device)  # torchrun: join the group (no-op for one process)
        self.distributed = dist_utils.is_initialized()
        self.is_main = dist_utils.is_main()
        self.cfg = train_config
        # Without an explicit task: the task the model records (every polymodal model sets task_name); a plain
        # module whose forward returns its own .loss gets the base Task (mean-loss validation).
        self.task = task if task is not None else _task_of_model(model)
        self.verbose = verbose
        # Called with (epoch, epoch row) after each validation, on every rank; it may raise to end the run (a tune
        # trial's pruning raises a PolymodalError whose tracker_status is "pruned").
        self.epoch_callback = epoch_callback
        resolve_trackers(train_config.trackers)  # a chosen tracker whose package is missing: refused before any work
        self._stop: StopSignals | None = None  # set while fit() runs
        self._probe_batch = None  # the last training batch: re-run before saving, to check the outputs
        self._healthy_step: int | None = None
        if self.cfg.grad_accum < 1:
            raise ConfigError(f"train.grad_accum must be >= 1, got {self.cfg.grad_accum}")
        self.device = dist_utils.device_for_rank(resolve_device(self.cfg.device))
        self.model = model.to(self.device)
        # forward_model runs training forwards: DDP averages gradients over ranks (and broadcasts rank 0's initial
        # weights); self.model stays the plain module for evaluation, saving and the guards. Under FSDP the model is
        # sharded in place (its forwards are collective: see _evaluate, _save_checkpoint, training/fsdp.py).
        self.forward_model = self._wrap_ddp(self.model)
        self.run_dir = Path(run_dir or self.cfg.out_dir)
        self.config = config
        self.evaluate_fn = evaluate_fn
        self.val_loader = val_loader
        if self.distributed:
            self.train_loader, self.sampler = dist_utils.distributed_train_loader(train_loader, self.cfg.seed)
        else:
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

    def _wrap_ddp(self, model: nn.Module):
        """The training forward: DDP, or with ``train.strategy: fsdp`` the model sharded in place (training/fsdp.py);
        the model itself in one process."""
        if fsdp.wants_fsdp(self.cfg, self.distributed):
            return fsdp.ShardedForward(fsdp.shard_model(model, self.device))
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("multi-process training: the model has no trainable parameter")
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters: a batch may leave an encoder unused (absent modality, modality dropout, an
        # objective that skips a tower); DDP would otherwise wait for its gradient forever.
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

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
        monitor, mode = self.cfg.monitor, self.cfg.monitor_mode
        if monitor is None:  # the task's default (config.TASK_CONFIGS), else the validation loss
            from ..config import TASK_CONFIGS

            spec = TASK_CONFIGS.get(self.task.name)
            monitor, default_mode = spec.monitor if spec is not None else ("val_loss", "min")
            mode = mode or default_mode
        if not monitor.startswith(("val_", "train_")):
            raise ConfigError(f"train.monitor: {monitor!r} must start with val_ or train_ (e.g. val_accuracy)")
        return monitor, mode or ("min" if monitor.endswith("loss") else "max")

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

        The run owns ``run_dir`` for the whole call (:class:`~.run_lock.RunLock`). Raises (all PolymodalError):
        RunLockedError (another live run holds run_dir), TrainingDivergedError (NaN/inf loss, gradient norm,
        weights or outputs), DiskFullError (a write ran out of space / quota / file-size limit),
        TrainingInterrupted (SIGINT / SIGTERM: the step in progress is finished and a resumable checkpoint
        written first; a second signal stops at once).
        """
        lock = RunLock(self.run_dir) if self.is_main else contextlib.nullcontext()  # rank 0 owns run_dir
        with lock, translate_write_errors(self.run_dir, self._kept_note), StopSignals() as stop:
            self._stop = stop
            try:
                return self._fit(resume, stop_after_steps)
            except KeyboardInterrupt:  # a second signal (or one with our handler not installed): no saving
                raise self._interrupted(stop.requested or signal.SIGINT, saved=False) from None
            finally:
                self._stop = None

    def _fit(self, resume: bool, stop_after_steps: int | None) -> dict[str, Any]:
        configure_determinism(self.cfg.deterministic)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        elif self.is_main:
            self._clear_previous_run()
            if self.config is not None:
                save_config(self.config, self.run_dir / "config.yaml")
        dist_utils.barrier()  # the other ranks start once rank 0 has cleared / recovered the directory
        self.logger = (
            MetricLogger(self.run_dir, open_trackers(self.cfg.trackers, self.run_dir, self.config or self.cfg, resume,
                                                     self.state["global_step"]))
            if self.is_main else _NullLogger()
        )
        if resume:
            self.logger.truncate_after(self.state["global_step"], self.state["epoch"])
        self._steps_this_call = 0
        apply_thread_policy(self.model)  # intra-op threads by model size, when the CLI's policy is on
        self._count_step_flops = policy_enabled() and not self.distributed  # then by the first step's FLOPs
        self._thread_tuner = None  # ...then, for small steps, by timing them (threads.ThreadTuner)
        self.model.train()
        error: BaseException | None = None  # how the run ended, for the trackers
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
                stopped = self._run_epoch(batches, stop_after_steps)
                if stopped:
                    self._save_checkpoint()
                    if stopped == "signal":
                        raise self._interrupted(self._stop.requested, saved=True)
                    return self.summary(interrupted=True)
                self._end_epoch()
                self._save_checkpoint()
                if self._stop_requested() and not self.state["finished"]:
                    raise self._interrupted(self._stop.requested, saved=True)
        except BaseException as err:
            error = err
            raise
        finally:
            self.logger.close(error, {**self.summary(), "finished": self.state["finished"]})
        return self.summary()

    def _step_flop_counter(self):
        """A FlopCounterMode for the first forward of this fit call when the thread policy sizes the threads by
        work (once: counting slows a forward), else None."""
        if not getattr(self, "_count_step_flops", False):
            return None
        self._count_step_flops = False
        from torch.utils.flop_counter import FlopCounterMode

        return FlopCounterMode(display=False)

    def _run_epoch(self, batches, stop_after_steps: int | None) -> str | None:
        """Train through the rest of an epoch; "steps" when stopped by ``stop_after_steps``, "signal" when
        stopped on SIGINT / SIGTERM (both at an optimizer-step boundary), None at the end of the epoch."""
        cfg, state = self.cfg, self.state
        remaining = self.batches_per_epoch - state["batches_done"]
        progress = self._progress(remaining, state["epoch"])
        pending = 0  # micro-batches accumulated since the last optimizer step
        self.optimizer.zero_grad(set_to_none=True)
        tuner = getattr(self, "_thread_tuner", None)
        if tuner is not None:
            tuner.start()  # the time since the last step (validation, checkpoint) is no step
        # Each step's micro-batches are read and counted first, so every one is weighted by its share of the step.
        micro_batches = step_micro_batches(
            self.model,
            batches,
            counter=lambda b: self.task.loss_counts(self.model, b),
            prepare=lambda b: self.task.prepare_batch(self.model, b),
            group_size=lambda: min(cfg.grad_accum, self.batches_per_epoch - state["batches_done"]),
            transform=None if self.modality_dropout is None else lambda b: self.modality_dropout(b, training=True),
        )
        for micro in micro_batches:
            batch = micro.batch.to(self.device)
            group = min(cfg.grad_accum, self.batches_per_epoch - (state["batches_done"] - pending))
            # DDP: all-reduce gradients once per optimizer step, on its last micro-batch.
            defer_sync = self.distributed and pending + 1 < group
            with self.forward_model.no_sync() if defer_sync else contextlib.nullcontext():
                counter = self._step_flop_counter()
                with self.autocast(), counter or contextlib.nullcontext():
                    output = self.task.training_output(self.model, self.forward_model(batch), batch)
                if counter is not None:  # the first step of this fit: size the threads by its work
                    flops = counter.get_total_flops()
                    self._thread_tuner = tuner_for(apply_thread_policy(self.model, step_flops=flops), flops)
                loss = output.loss
                self._check_finite(loss, "loss", batch)
                share = share_of_step(output, micro, len(batch))  # Σ over the step's micro-batches = the step loss
                self.scaler.scale(share).backward()
            pending += 1
            state["batches_done"] += 1
            # Σ share · step samples over an epoch / its samples = the sample-weighted mean of the step losses.
            state["epoch_loss_sum"] += float(share.detach()) * micro.step_samples
            state["epoch_loss_count"] += len(batch)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)  # a refresh per step floods logs
            if pending == group:
                self._optimizer_step(batch)
                tuner = getattr(self, "_thread_tuner", None)  # set on the first step's forward
                if tuner is not None:
                    tuner.step_done()
                pending = 0
                self._steps_this_call += 1
                if state["global_step"] >= self.total_steps:
                    break
                stopped = "signal" if self._stop_requested() else None
                if stop_after_steps is not None and self._steps_this_call >= stop_after_steps:
                    stopped = "steps"
                if stopped:
                    if progress is not None:
                        progress.close()
                    return stopped
        if progress is not None:
            progress.close()
        return None

    def _optimizer_step(self, batch) -> None:
        state = self.state
        self._probe_batch = batch
        if self.cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self._trainable, self.cfg.clip_grad_norm)
            if self.autocast_dtype != torch.float16:  # with fp16 the scaler skips inf steps by design
                self._check_finite(norm, "gradient norm", batch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # Parameter bounds (the alignment logit-scale cap) are kept by projecting after the step; a clamp in
        # forward would zero their gradient outside the bound and silently stop them learning.
        project = getattr(self.model, "clamp_parameters", None)
        if project is not None:
            project()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state["global_step"] += 1
        if self.cfg.log_every and state["global_step"] % self.cfg.log_every == 0:
            loss_sum, loss_count = self._epoch_loss_totals()
            self.logger.log(
                {
                    "kind": "step",
                    "epoch": state["epoch"],
                    "step": state["global_step"],
                    "loss": loss_sum / max(1, loss_count),
                    "lr": self.scheduler.get_last_lr()[0],
                }
            )

    def _epoch_loss_totals(self) -> tuple[float, float]:
        """(Σ sample-weighted loss, samples) of the epoch so far, over every rank (a collective under DDP)."""
        total = [self.state["epoch_loss_sum"], float(self.state["epoch_loss_count"])]
        loss_sum, count = dist_utils.all_reduce_sum(total) if self.distributed else total
        return loss_sum, count

    def _unique_samples(self, count: float) -> int:
        """Samples of the split this epoch has trained on. Under DDP every rank consumed c of its positions, i.e.
        global positions [0, c·W) of the padded order, of which those past the split's n are padding repeats."""
        if isinstance(self.sampler, dist_utils.DistributedEpochSampler):
            return int(min(count, self.sampler.dataset_size))
        return int(count)

    def _stop_requested(self) -> bool:
        """A signal on any rank stops every rank at the same optimizer step (one tiny all-reduce per step)."""
        if not self.distributed:
            return super()._stop_requested()
        local = self._stop.requested if self._stop is not None else None
        signum = int(dist_utils.all_reduce_max([float(local or 0)])[0])
        if signum and self._stop is not None and self._stop.requested is None:
            self._stop.requested = signum  # report the signal another rank received
        return bool(signum)

    def _evaluate(self) -> dict[str, float]:
        """Validation metrics over exactly the split's N samples: rank 0 evaluates the whole split (no shard
        padding, contrastive losses local) and broadcasts, so every rank sees the single-process numbers."""
        evaluate = self.evaluate_fn or (
            lambda m, loader, d: self.task.validate(m, loader, d, self.autocast, self.config))
        if not self.distributed:
            return evaluate(self.model, self.val_loader, self.device)
        metrics = None
        if self.is_main or fsdp.is_sharded(self.model):  # FSDP forwards are collective: every rank evaluates
            with dist_utils.local_objectives():
                metrics = evaluate(self.model, self.val_loader, self.device)
        metrics = dist_utils.broadcast_object(metrics)
        # Validation on rank 0 alone draws from rank 0's RNGs only (each loader pass draws a base seed): every
        # rank takes rank 0's states, so the ranks keep the RNG streams a checkpoint (rank 0's) restores, and
        # resume stays exact for models with dropout.
        rng = dist_utils.broadcast_object(
            {"torch": torch_rng_state()["torch"], "python_numpy": python_numpy_rng_state()} if self.is_main else None)
        if not self.is_main:  # the CPU generator only: each GPU keeps its own device's generator
            restore_torch_rng_state({"torch": rng["torch"]})
            restore_python_numpy_rng_state(rng["python_numpy"])
        return metrics

    def _assert_healthy(self) -> None:
        # Each rank probes its own last batch: contrastive losses must not gather across ranks here.
        with dist_utils.local_objectives():
            super()._assert_healthy()

    @property
    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _end_epoch(self) -> None:
        state, started = self.state, time.perf_counter()
        loss_sum, loss_count = self._epoch_loss_totals()
        row: dict[str, Any] = {
            "kind": "epoch",
            "epoch": state["epoch"],
            "step": state["global_step"],
            "train_loss": loss_sum / max(1, loss_count),
            "train_samples": self._unique_samples(loss_count),
            "lr": self.scheduler.get_last_lr()[0],
        }
        if self.distributed:
            row["world_size"] = dist_utils.world_size()
        if self.val_loader is not None:
            metrics = self._evaluate()
            self.model.train()
            row.update({f"val_{key}": float(value) for key, value in metrics.items() if value is not None})
            row["val_seconds"] = time.perf_counter() - started
        if self.monitor not in row:
            available = sorted(k for k in row if k.startswith(("val_", "train_")))
            raise ConfigError(f"train.monitor: {self.monitor!r} is not a logged metric; available: {available}")
        self._check_epoch_metrics(row)
        self._assert_healthy()  # before best/ is written: never keep a model that gives NaN
        value = row[self.monitor]
        best = state["best_metric"]
        improved = best is None or (value > best if self.monitor_mode == "max" else value < best)
        if improved:
            state["best_metric"], state["best_epoch"], state["bad_epochs"] = value, state["epoch"], 0
            fsdp.save_best_model(self.model, self.best_dir)  # rank 0 writes (FSDP: every rank gathers first)
        else:
            state["bad_epochs"] += 1
        row["best"] = improved
        self.logger.log(row)
        state["history"].append(row)
        if self.verbose and self.is_main:  # run reporting, not progress display: printed whatever train.progress says
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
        if self.epoch_callback is not None:
            self.epoch_callback(row["epoch"], dict(row))

    def _progress(self, total: int, epoch: int):
        return make_progress(total, f"epoch {epoch + 1}/{self.max_epochs}", enabled=self.cfg.progress and self.is_main)

    # ------------------------------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        self._assert_healthy()  # the kept checkpoint is always one whose weights and outputs are finite
        state = dict(self.state)
        if self.distributed:  # rank 0 writes the epoch's loss totals over all ranks (see _resume)
            state["epoch_loss_sum"], state["epoch_loss_count"] = self._epoch_loss_totals()
        if self.modality_dropout is not None:
            state["modality_dropout_rng"] = self.modality_dropout.state_dict()["generator"].tolist()
        if fsdp.is_sharded(self.model):  # every rank writes its shard (torch.distributed.checkpoint)
            fsdp.save_sharded_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.scaler,
                                         state)
        elif self.is_main:
            # DDP keeps the ranks' weights, optimizer and RNG identical, so rank 0's state is every rank's.
            save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.scaler, state)
        dist_utils.barrier()  # nobody moves on (or exits) before the checkpoint is complete

    def _clear_previous_run(self) -> None:
        """A fresh run in a used directory starts a new log; old checkpoints, best model and results would
        otherwise mix with it (or outlive it as if they were its own, when it fails early)."""
        for name in ("metrics.jsonl", "metrics.csv", "metrics.json"):
            (self.run_dir / name).unlink(missing_ok=True)
        for directory in (self.checkpoint_dir, self.best_dir):
            if directory.exists():
                shutil.rmtree(directory)

    def _resume(self) -> None:
        if self.is_main:
            recover_directory(self.checkpoint_dir, is_complete_checkpoint)
        dist_utils.barrier()
        if not is_complete_checkpoint(self.checkpoint_dir):
            raise FileNotFoundError(
                f"cannot resume: no complete checkpoint in {self.checkpoint_dir} (start without --resume)"
            )
        check_resume_config(self.run_dir, self.config)
        state = load_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.scaler)
        rng = state.pop("modality_dropout_rng", None)
        if rng is not None and self.modality_dropout is not None:
            self.modality_dropout.load_state_dict({"generator": torch.tensor(rng, dtype=torch.uint8)})
        state.pop("rng", None)
        state.pop("format_version", None)
        if not self.is_main:  # the saved loss totals are all ranks': count them once (on rank 0)
            state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
        self.state = {**self._fresh_state(), **state}
        if self.is_main:
            warn_if_finished(self.state, self.run_dir)

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


class _NullLogger:
    """The metric logger of ranks other than 0: they compute the same rows but never write them."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def truncate_after(self, step: int, epoch: int) -> None:
        pass

    def close(self, error: BaseException | None = None, summary: dict[str, Any] | None = None) -> None:
        pass
