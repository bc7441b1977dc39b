"""``polymodal eval``: load a saved model, rebuild its data split, build the report and write it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .build import build_report
from .html import render_html
from .kinds import kind_for_report
from .loading import eval_config_for, load_any_model, run_config, run_dir_of
from .markdown import render_markdown
from .options import ReportOptions
from .schema import validate_report


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Validate and write report.json, report.md, report.html and predictions.json (when present).

    report.json holds a pointer ``{"file": "predictions.json", "num_samples": N}`` instead of the per-sample
    predictions. Returns {"json", "md", "html"[, "predictions"]} → path. Raises ValueError (naming the failing
    path) when the report does not match report_schema.json.
    """
    from ...model import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    validate_report(report)
    predictions = report.get("predictions")
    slim = {**report, "predictions": None if predictions is None else {"file": "predictions.json",
                                                                       "num_samples": len(predictions["ids"])}}
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write_text(paths["json"], json.dumps(slim, indent=2, allow_nan=False))
    atomic_write_text(paths["md"], render_markdown(slim))
    atomic_write_text(paths["html"], render_html(slim))
    if predictions is not None:
        paths["predictions"] = out_dir / "predictions.json"
        atomic_write_text(paths["predictions"], json.dumps(predictions, allow_nan=False))
    return paths


def evaluate_path(path: str | Path, data: str | None = None, split: str = "test", out: str | Path | None = None,
                  options: ReportOptions | None = None,
                  overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """``polymodal eval``: load, evaluate, write metrics.json + predictions.json + report.{json,md,html}.

    ``path``: a run directory (its best/ model) or a model directory; ``data``: a manifest instead of the
    training data's ``split``; ``out``: default <run or model dir>/eval_<split>. metrics.json is what the
    model's report kind states as its metrics (classification: the classification report; alignment: none).
    ``overrides``: processor options of the saved model (``--set model.modalities.image.processor.max_pixels=N``),
    see :func:`polymodal.inference.apply_processor_overrides`."""
    from ...model import atomic_write_text
    from ...pipeline import prepare

    options = options or ReportOptions()
    path = Path(path)
    model, model_dir = load_any_model(path)
    if overrides:
        from ...inference import apply_processor_overrides

        apply_processor_overrides(model, overrides)
    run_dir = run_dir_of(path, model_dir)
    saved = run_config(run_dir)
    config = eval_config_for(model, data, split, saved)
    _, loaders, labels = prepare(config, splits=(split,))
    if split not in loaders:
        raise ValueError(f"the data provides no {split!r} split")
    source = data or (f"builtin:{config.data.name}" if config.data.name else getattr(config.data, split))
    report = build_report(model, loaders[split], options, model_dir=model_dir, run_dir=run_dir, split=split,
                          data_source=source, train_seed=(saved.get("train") or {}).get("seed"), labels=labels)
    # a manifest's report goes to its own folder: it never replaces the split's report that --compare reads
    default = f"eval_{split}" if data is None else "eval_data_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).stem)
    out_dir = Path(out) if out else (run_dir or model_dir) / default
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_report(report, out_dir)
    kind = kind_for_report(report)
    metrics = kind.metrics(report) if kind is not None else None
    if metrics is not None:
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        paths["metrics"] = out_dir / "metrics.json"
    return report, paths


__all__ = ["evaluate_path", "write_report"]
