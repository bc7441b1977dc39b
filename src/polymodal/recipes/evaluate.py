"""The evaluate recipe: ``polymodal eval`` (any task) and the alignment-only retrieval / zero-shot evaluation of a
saved model on a split.

    report, paths = evaluate_path("runs/x", split="test")        # report.{json,md,html}, metrics.json
    report = evaluate_alignment_path("runs/align", split="test")  # retrieval + zero-shot as JSON-ready data
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..evaluation.report.build import build_report
from ..evaluation.report.evaluate import write_report
from ..evaluation.report.kinds import kind_for_report
from ..evaluation.report.loading import eval_config_for, load_any_model, run_config, run_dir_of
from ..evaluation.report.options import ReportOptions
from ..files import atomic_write_text
from ..tasks import get_task
from .train import prepare


def evaluate_path(path: str | Path, data: str | None = None, split: str = "test", out: str | Path | None = None,
                  options: ReportOptions | None = None,
                  overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """``polymodal eval``: load, evaluate, write metrics.json + predictions.json + report.{json,md,html}.

    ``path``: a run directory (its best/ model) or a model directory; ``data``: a manifest instead of the
    training data's ``split``; ``out``: default <run or model dir>/eval_<split>. metrics.json is what the
    model's report kind states as its metrics (classification: the classification report; generation tasks:
    ``tasks.generation_eval.evaluate_generation``'s result, decoded with the run's ``generate`` section;
    alignment: none).
    ``overrides``: processor options of the saved model (``--set model.modalities.image.processor.max_pixels=N``),
    see :func:`polymodal.inference.apply_processor_overrides`."""

    options = options or ReportOptions()
    path = Path(path)
    model, model_dir = load_any_model(path)
    if overrides:
        from ..inference import apply_processor_overrides

        apply_processor_overrides(model, overrides)
    run_dir = run_dir_of(path, model_dir)
    saved = run_config(run_dir)
    config = eval_config_for(model, data, split, saved)
    _, loaders, labels = prepare(config, splits=(split,))
    if split not in loaders:
        raise ValueError(f"the data provides no {split!r} split")
    source = data or (f"builtin:{config.data.name}" if config.data.name else getattr(config.data, split))
    report = build_report(model, loaders[split], options, model_dir=model_dir, run_dir=run_dir, split=split,
                          data_source=source, train_seed=(saved.get("train") or {}).get("seed"), labels=labels,
                          config=config, run_config=saved)
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




def is_alignment_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` (or its best/ subdirectory, for a run directory) holds a saved model of the alignment
    task (the task its config.json records)."""
    from ..models.persistence import ModelDirectoryError, saved_task

    for candidate in (Path(path), Path(path) / "best"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            try:
                return saved_task(candidate) == "alignment"
            except ModelDirectoryError:
                return False
    return False


def evaluate_alignment_path(path: str | os.PathLike, data: str | None = None, split: str = "test",
                            **kwargs: Any) -> dict[str, Any]:
    """Evaluate a saved alignment model (model directory or run directory) on a split → retrieval + zero-shot
    report (``metrics.alignment.evaluate_alignment``; extra keyword arguments go to it).

    The data: ``data`` (a manifest, or a built-in data set name) if given, else the data section of the run's
    config.yaml (saved by the Trainer next to best/). Zero-shot class names / templates: the run's ``zeroshot`` /
    ``eval`` sections (spoken digits: the digit words). Raises ValueError for a directory of another task or a
    missing split.
    """
    from ..inference import resolve_model_dir
    from ..metrics.alignment import evaluate_alignment
    from ..registry import DATASETS
    from ..tasks import load_model
    from ..tasks.alignment import default_class_names

    model_dir = resolve_model_dir(path)
    if not is_alignment_model_dir(model_dir):
        raise ValueError(f"{model_dir} is not an alignment model directory (its config.json task is not alignment)")
    model = load_model(model_dir)
    saved = run_config(model_dir.parent if (model_dir.parent / "config.yaml").is_file() else None)
    data_section = dict(saved.get("data") or {})
    if data is not None:
        data_section.update({"name": None, "train": None, "val": None, "test": None, "limit": None})
        if data in DATASETS.names():
            data_section["name"] = data
        else:
            data_section[split] = data
    elif not data_section:
        raise ValueError(f"{model_dir} has no run config.yaml next to it: pass the data (a manifest or data set name)")
    saved = {**saved, "data": data_section}
    model.data_config = data_section
    config = eval_config_for(model, None, split, saved)
    _, loaders, labels = get_task("alignment").prepare_data(config, splits=(split,), processors=model.processors)
    if split not in loaders:
        raise ValueError(f"the data has no {split!r} split")
    class_names = default_class_names(config, labels) if labels else None
    options = {"class_names": class_names, "templates": config.eval.templates or None, "ks": config.eval.ks}
    report = evaluate_alignment(model, loaders[split], **{**options, **kwargs})
    report["model_dir"] = str(model_dir)
    report["split"] = split
    return report
