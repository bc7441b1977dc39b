"""Metric logs of a run: ``metrics.jsonl`` (one JSON object per row), ``metrics.csv``, every row forwarded to the
trackers of ``train.trackers`` (:mod:`.trackers`: TensorBoard / MLflow only when chosen, never because a package
happens to be installed); and the progress display of a loop (:func:`make_progress`).

Rows are either ``kind="step"`` (train loss / lr every ``log_every`` optimizer steps) or ``kind="epoch"``
(epoch means and validation metrics). The CSV has the union of all columns seen so far, leading with
kind, epoch, step; when a new column appears the CSV is rewritten from the JSONL (rare: only early on).

Progress display and run reporting are separate: the Trainer prints its per-epoch summary lines whatever
``train.progress`` says; ``progress`` only switches the per-step display, which adapts to where it goes (a
tqdm bar on a terminal, a few plain lines in a file or pipe, where every ``\r`` frame would be a line).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

LEADING_COLUMNS = ("kind", "epoch", "step")


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays parseable by strict readers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricLogger:
    """Rows → ``metrics.jsonl`` + ``metrics.csv``, and to each of ``trackers`` (started by the caller, see
    :func:`.trackers.open_trackers`); :meth:`close` ends the trackers with the run's status and final metrics."""

    def __init__(self, run_dir: str | os.PathLike, trackers: list | tuple = ()):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self.columns: list[str] = []
        self.trackers = list(trackers)
        if self.jsonl_path.exists():
            self._rewrite_csv(self.read_rows())

    def read_rows(self) -> list[dict[str, Any]]:
        if not self.jsonl_path.exists():
            return []
        rows = []
        for number, line in enumerate(self.jsonl_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: drop it, keep the rest
                if number != len(self.jsonl_path.read_text().splitlines()):
                    raise ValueError(f"{self.jsonl_path}:{number} is not valid JSON") from None
        return rows

    def log(self, row: dict[str, Any]) -> None:
        row = {key: _clean(value) for key, value in row.items()}
        with open(self.jsonl_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
        if any(key not in self.columns for key in row):
            self._rewrite_csv(self.read_rows())
        else:
            with open(self.csv_path, "a", newline="") as handle:
                csv.DictWriter(handle, self.columns).writerow(row)
        for tracker in self.trackers:
            tracker.log(row)

    def truncate_after(self, step: int, epoch: int) -> None:
        """On resume: drop rows written after the checkpoint (they will be produced again)."""
        rows = [
            row
            for row in self.read_rows()
            if (row.get("kind") == "epoch" and row.get("epoch", 0) < epoch)
            or (row.get("kind") != "epoch" and row.get("step", 0) <= step)
        ]
        tmp = self.jsonl_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.replace(tmp, self.jsonl_path)
        self._rewrite_csv(rows)

    def _rewrite_csv(self, rows: list[dict[str, Any]]) -> None:
        columns = list(LEADING_COLUMNS)
        for row in rows:
            columns += [key for key in row if key not in columns]
        self.columns = columns
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)

    def close(self, error: BaseException | None = None, summary: dict[str, Any] | None = None) -> None:
        """End the trackers: status from ``error`` / ``summary`` (see :func:`.trackers.run_status`), final
        metrics from ``summary`` (a Trainer summary). Every tracker is closed even when one fails to finish."""
        from .trackers import final_metrics, run_status

        trackers, self.trackers = self.trackers, []
        try:
            if summary is not None:
                status = run_status(error, finished=bool(summary.get("finished")))
                metrics = final_metrics(summary)
                for tracker in trackers:
                    tracker.finish(status, metrics)
        finally:
            for tracker in trackers:
                tracker.close()


# ---------------------------------------------------------------------------------------------- progress


def _env_disabled() -> bool:
    """TQDM_DISABLE=1 switches every bar off (tqdm's own convention); the plain lines follow it too."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


class PlainProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` for output that is not a terminal: one line every
    ``every`` updates (default: a quarter of ``total``), never the last one (the caller's summary follows),
    so a log file gets at most 3 lines per loop instead of a ``\r`` frame per step."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None, every: int | None = None):
        self.total, self.desc = max(0, int(total)), desc
        self.stream = stream if stream is not None else sys.stderr
        self.every = every or max(1, math.ceil(self.total / 4))
        self.n = 0
        self.postfix = ""
        self.started = time.perf_counter()

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        if self.n < self.total and self.n // self.every > before // self.every:
            rate = self.n / max(1e-9, time.perf_counter() - self.started)
            postfix = f"  {self.postfix}" if self.postfix else ""
            print(f"{self.desc}: {self.n}/{self.total} ({rate:.1f} it/s){postfix}", file=self.stream, flush=True)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = " ".join(f"{key} {value}" for key, value in values.items())

    def close(self) -> None:
        pass


def make_progress(total: int, desc: str, enabled: bool = True, stream: TextIO | None = None):
    """A progress display for a loop of ``total`` steps, or None when ``enabled`` is False (or TQDM_DISABLE).

    On a terminal: a tqdm bar (cleared at the end, refreshed at most ~2x a second). In a file or pipe
    (``> log 2>&1``, CI, nohup): :class:`PlainProgress` lines. Call ``set_postfix(..., refresh=False)``:
    a forced refresh per step is what floods logs.
    """
    if not enabled or _env_disabled():
        return None
    stream = stream if stream is not None else sys.stderr
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        return PlainProgress(total, desc, stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=stream, mininterval=0.5)
