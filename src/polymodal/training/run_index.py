"""`polymodal runs DIR`: past runs found under a directory, as a table.

A run directory is one with a ``run.json`` record (written by the jsonl tracker, :mod:`.trackers`), or, for runs
made before records existed, a ``config.yaml`` next to a ``metrics.jsonl``. Test metrics come from the run's
``metrics.json`` when it has them. The walk skips hidden directories and a run's own sub-directories
(checkpoints, best model, TensorBoard logs), so pointing it at a project root stays fast.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .trackers import RUN_RECORD, config_hash, read_run_record

_SKIP = {"checkpoints", "best", "tensorboard", "mlruns", "__pycache__", "node_modules", "site-packages"}


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(root):
        if RUN_RECORD in files or ("config.yaml" in files and "metrics.jsonl" in files):
            found.append(Path(current))
            dirs[:] = [d for d in dirs if d not in _SKIP and not d.startswith(".")]
            continue
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))
    return found


def _seconds(started: str | None, ended: str | None) -> float | None:
    try:
        fmt = "%Y-%m-%dT%H:%M:%S%z"
        return (datetime.strptime(ended, fmt) - datetime.strptime(started, fmt)).total_seconds()
    except (TypeError, ValueError):
        return None


def describe_run(run_dir: Path, root: Path) -> dict[str, Any]:
    """One table row: path, task, config hash, status, best monitored metric, test accuracy, epochs, times."""
    record = read_run_record(run_dir) or {}
    row: dict[str, Any] = {"run": str(run_dir.relative_to(root)) if run_dir != root else ".",
                           "task": record.get("task"), "config_hash": record.get("config_hash"),
                           "status": record.get("status"), "started": record.get("started"),
                           "seconds": _seconds(record.get("started"), record.get("ended"))}
    final = record.get("final") or {}
    best = next(((k[len("best_"):], v) for k, v in final.items() if k.startswith("best_") and k != "best_epoch"),
                (None, None))
    row["metric"], row["value"] = best
    row["epochs"] = final.get("epochs_run")
    if not record:  # a run from before run.json: what its config and metric rows say
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            config = {}
        row["config_hash"] = config_hash(config) if config else None
        row["task"] = "alignment" if (config.get("model") or {}).get("objectives") else "classification"
        row["status"] = "unknown"
        row["started"] = datetime.fromtimestamp((run_dir / "metrics.jsonl").stat().st_mtime).strftime(
            "%Y-%m-%dT%H:%M:%S")
    try:
        test = json.loads((run_dir / "metrics.json").read_text()).get("test") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        test = {}
    row["test_accuracy"] = test.get("accuracy") if isinstance(test, dict) else None
    return row


def list_runs(root: str | os.PathLike = ".") -> list[dict[str, Any]]:
    """Every run under ``root``, oldest first. Raises FileNotFoundError when ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs: {str(root)!r} is not a directory (give the folder that holds run directories)")
    rows = [describe_run(run_dir, root) for run_dir in find_run_dirs(root)]
    return sorted(rows, key=lambda r: (r["started"] or "", r["run"]))


def format_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs found (a run directory has run.json, or config.yaml + metrics.jsonl)"
    header = ["run", "task", "config", "status", "metric", "value", "test acc", "epochs", "started", "time (s)"]
    table = [[r["run"], r["task"] or "?", r["config_hash"] or "?", r["status"] or "?", r["metric"] or "-",
              _num(r["value"]), _num(r["test_accuracy"]), "-" if r["epochs"] is None else str(r["epochs"]),
              (r["started"] or "?")[:19].replace("T", " "), "-" if r["seconds"] is None else f"{r['seconds']:.0f}"]
             for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"
