"""The ``training`` section: the run's logged curves, read back from its metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def training_curves(run_dir: str | Path | None) -> dict[str, Any] | None:
    """Series {metric: {step, value}} from run_dir/metrics.jsonl (numeric columns only), or None.

    Learning rate and timing columns are left out (not curves of the model). A last line cut short by a crash
    is ignored; any other line that is not JSON raises ValueError naming the file and line.
    """
    if run_dir is None or not (Path(run_dir) / "metrics.jsonl").exists():
        return None
    series: dict[str, dict[str, list]] = {}
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # last line cut short by a crash: ignore it
                continue
            raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}:{number} is not valid JSON: {err}") from err
        step = row.get("step", row.get("epoch", number))
        for key, value in row.items():
            if key in ("kind", "epoch", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key in ("lr", "time", "seconds") or key.endswith("_seconds"):
                continue
            entry = series.setdefault(key, {"step": [], "value": []})
            entry["step"].append(step)
            entry["value"].append(float(value))
    return {"series": series, "source": str(Path(run_dir) / "metrics.jsonl")} if series else None


__all__ = ["training_curves"]
