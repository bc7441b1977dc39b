"""Run tracking: where a run's hyperparameters, per-step / per-epoch metrics and final metrics go.

``train.trackers`` names the sinks (default ``["jsonl"]``):

- ``jsonl`` (always on, added if left out): the run directory's ``metrics.jsonl`` / ``metrics.csv`` rows
  (written by :class:`~.logging.MetricLogger`) plus ``run.json``, the run record: config hash, task, flat
  hyperparameters, start / end time, status (running, finished, stopped, interrupted, pruned, failed) and
  final metrics. ``polymodal runs DIR`` lists runs from these records.
- ``tensorboard``: a SummaryWriter in ``<run_dir>/tensorboard`` (scalars ``train_step/*`` and ``epoch/*``, the
  config as text, and at the end the HParams-plugin summary of hyperparameters + final metrics in the same
  event file). Needs the ``tensorboard`` package (``pip install 'polymodal[tracking]'``).
- ``mlflow``: one MLflow run per polymodal run through ``MlflowClient`` (thread-safe: parallel tune trials
  each own a run): params once, metrics per row, final metrics and a ``status`` tag at the end. The tracking
  URI and experiment are MLflow's own settings (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``, default
  experiment ``polymodal``). Needs the ``mlflow`` (or ``mlflow-skinny``) package.

A tracker whose package is missing is refused before training starts with :class:`TrackerUnavailableError`,
naming the package and the install command: a chosen tracker never silently writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..errors import PolymodalError

RUN_RECORD = "run.json"
KNOWN_TRACKERS = ("jsonl", "tensorboard", "mlflow")
# tracker → (importable module it needs, what to install)
_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install 'polymodal[tracking]' (or: pip install tensorboard)"),
    "mlflow": ("mlflow", "pip install mlflow (or the lighter mlflow-skinny)"),
}
# Keys that say where / how loudly a run goes, not what it computes: left out of the config hash.
_HASH_IGNORED = {("train", "out_dir"), ("train", "progress"), ("train", "trackers"), ("train", "log_every")}


class TrackerUnavailableError(PolymodalError):
    """A tracker named in ``train.trackers`` needs a package that is not installed."""


def resolve_trackers(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """The trackers to open, ``jsonl`` first, duplicates dropped; raises TrackerUnavailableError (a missing
    package) or ValueError (an unknown name), both naming ``train.trackers``."""
    resolved = ["jsonl"]
    for name in names or []:
        if name not in KNOWN_TRACKERS:
            raise ValueError(f"train.trackers: unknown tracker {name!r}; choose from {list(KNOWN_TRACKERS)}")
        if name not in resolved:
            resolved.append(name)
    for name in resolved:
        if name in _PACKAGES:
            module, install = _PACKAGES[name]
            if importlib.util.find_spec(module) is None:
                raise TrackerUnavailableError(
                    f"train.trackers: {name!r} needs the {module!r} package, which is not installed; {install}, "
                    f"or remove {name!r} from train.trackers"
                )
    return resolved


# ---------------------------------------------------------------------------------------------- run facts


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return dict(config)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` → ``{"train.lr": 1e-3}``; lists become JSON text (trackers take scalars)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        elif isinstance(value, (list, tuple, dict)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def config_hash(config: Any) -> str:
    """sha256 (first 12 hex digits) of the resolved config without the keys that only say where / how loudly a
    run goes (train.out_dir, progress, trackers, log_every): two runs with one hash computed the same thing."""
    data = _as_dict(config)
    for section, key in _HASH_IGNORED:
        if isinstance(data.get(section), dict):
            data[section] = {k: v for k, v in data[section].items() if k != key}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def task_of(config: Any) -> str:
    """The task a run config trains (its ``task``); "unknown" for anything else."""
    task = getattr(config, "task", None)
    if isinstance(task, str) and task:
        return task
    return "unknown"  # a Trainer given no run config (a TrainConfig alone): nothing says


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers a run ends with: best monitored value and epoch, steps, and the last epoch row's metrics."""
    metrics: dict[str, float] = {}
    if summary.get("best_metric") is not None:
        metrics[f"best_{summary['monitor']}"] = float(summary["best_metric"])
        metrics["best_epoch"] = summary["best_epoch"]
    metrics["epochs_run"] = summary.get("epochs_run", 0)
    metrics["global_step"] = summary.get("global_step", 0)
    last = (summary.get("history") or [{}])[-1]
    for key, value in last.items():
        if key.startswith(("train_loss", "val_")) and key != "val_seconds" and _is_number(value):
            metrics[f"last_{key}"] = float(value)
    return metrics


def run_status(error: BaseException | None, finished: bool) -> str:
    """finished / stopped (returned before the end, resumable) / interrupted (signal) / pruned (an error with
    ``tracker_status = "pruned"``, e.g. a tune trial) / failed."""
    if error is None:
        return "finished" if finished else "stopped"
    status = getattr(error, "tracker_status", None)
    if isinstance(status, str):
        return status
    if isinstance(error, KeyboardInterrupt) or type(error).__name__ == "TrainingInterrupted":
        return "interrupted"
    return "failed"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------------------------- trackers


class Tracker:
    """One sink. ``start`` once per fit (``resume`` True on a resumed run), ``log`` per metric row,
    ``finish`` once with the run's status and final metrics, ``close`` always (also after a failure)."""

    def start(self, params: dict[str, Any], info: dict[str, Any], resume: bool) -> None:
        pass

    def log(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, status: str, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlTracker(Tracker):
    """``run.json`` next to ``metrics.jsonl``: the record ``polymodal runs`` reads (rows are MetricLogger's)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RUN_RECORD
        self.record: dict[str, Any] = {}

    def start(self, params: dict[str, Any], info: dict[str, Any], resume: bool) -> None:
        previous = read_run_record(self.path.parent) if resume else None
        self.record = {
            "format": 1,
            **{k: v for k, v in info.items() if k != "resume_step"},
            "started": (previous or {}).get("started") or _now(),
            "resumed": ((previous or {}).get("resumed", 0) + 1) if resume else 0,
            "status": "running",
            "params": params,
            "final": {},
        }
        self._write()

    def finish(self, status: str, metrics: dict[str, float]) -> None:
        self.record.update(status=status, ended=_now(), final=metrics)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=2, default=str))
        os.replace(tmp, self.path)  # atomic: `polymodal runs` never reads half a record


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path):
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = None
        self.params: dict[str, Any] = {}

    def start(self, params: dict[str, Any], info: dict[str, Any], resume: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # On resume, hide the events a crashed run wrote after its checkpoint (they are produced again).
        purge = int(info.get("resume_step", 0)) + 1 if resume else None
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)
        self.params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        if not resume:
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def log(self, row: dict[str, Any]) -> None:
        prefix = "train_step" if row.get("kind") == "step" else "epoch"
        for key, value in row.items():
            if key not in ("kind", "epoch", "step") and _is_number(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, global_step=row.get("step", 0))

    def finish(self, status: str, metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = {f"final/{k}": float(v) for k, v in metrics.items() if _is_number(v)}
        # The HParams plugin summaries go into this run's own event file (SummaryWriter.add_hparams would open a
        # sub-run), so the dashboard pairs the hyperparameters with this run's curves.
        for summary in hparams({**self.params, "status": status}, final):
            self.writer.file_writer.add_summary(summary)
        for key, value in final.items():
            self.writer.add_scalar(key, value, global_step=int(metrics.get("global_step", 0)))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowTracker(Tracker):
    """An MLflow run per polymodal run; its id is kept in ``<run_dir>/mlflow_run_id`` so a resume continues it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.client = None
        self.run_id: str | None = None

    def start(self, params: dict[str, Any], info: dict[str, Any], resume: bool) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        id_file = self.run_dir / "mlflow_run_id"
        if resume and id_file.exists():
            self.run_id = id_file.read_text().strip()
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "polymodal")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                     tags={"polymodal.task": info.get("task", ""),
                                           "polymodal.config_hash": info.get("config_hash", ""),
                                           "polymodal.run_dir": str(self.run_dir.resolve())})
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        for key, value in params.items():  # MLflow params are strings of at most 6000 characters
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log(self, row: dict[str, Any]) -> None:
        prefix = "step_" if row.get("kind") == "step" else ""
        stamp = int(time.time() * 1000)
        for key, value in row.items():
            if key not in ("kind", "epoch", "step") and _is_number(value):
                self.client.log_metric(self.run_id, f"{prefix}{key}", float(value), timestamp=stamp,
                                       step=int(row.get("step", 0)))

    def finish(self, status: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if _is_number(value):
                self.client.log_metric(self.run_id, f"final_{key}", float(value))
        self.client.set_tag(self.run_id, "polymodal.status", status)
        mlflow_status = {"finished": "FINISHED", "interrupted": "KILLED", "stopped": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, status=mlflow_status)


_TRACKERS = {"jsonl": JsonlTracker, "tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


def open_trackers(names: list[str] | None, run_dir: str | os.PathLike, config: Any, resume: bool = False,
                  resume_step: int = 0) -> list[Tracker]:
    """Start the trackers of ``train.trackers`` for a fit of ``config`` in ``run_dir`` (hyperparameters are
    logged here, once). Raises TrackerUnavailableError for a tracker whose package is missing."""
    resolved = resolve_trackers(names)
    params = flatten(_as_dict(config))
    info = {"run_dir": str(Path(run_dir).resolve()), "task": task_of(config), "config_hash": config_hash(config),
            "trackers": resolved, "resume_step": resume_step}
    trackers = [_TRACKERS[name](Path(run_dir)) for name in resolved]
    for tracker in trackers:
        tracker.start(params, info, resume)
    return trackers


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
