"""The classification recipe, top to bottom: config → data → model → Trainer → best model → test metrics.

Used by ``polymodal train`` / ``eval`` and by the demo; readable as the reference for doing it by hand.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .config import Config, config_to_dict
from .jsonable import jsonable as _jsonable
from .model import MultimodalModel, atomic_write_text


def prepare(config: Config, splits: tuple[str, ...] = ("train", "val", "test")):
    """Processors, data loaders and the label list for a config (labels come from the data when not given)."""
    from .data import build_dataloaders, build_processors

    processors = build_processors(config.model.modalities)
    loaders, labels = build_dataloaders(config, processors, splits=splits)
    if list(config.model.head.labels) != list(labels):  # none given, or given as [0, 1, 2.0]: the canonical list
        config.model.head = dataclasses.replace(config.model.head, labels=list(labels))
    return processors, loaders, list(config.model.head.labels)


def evaluate_model(model: MultimodalModel, loader, device: str = "cpu") -> dict[str, Any]:
    """Full classification report (accuracy, per-class P/R/F1, averages, confusion matrix, ROC-AUC) + loss."""
    from .evaluation.classification import classification_report, predict_loader

    model = model.to(device).eval()
    y_true, probs, ids = predict_loader(model, loader, device)
    report = classification_report(y_true, probs, model.labels, model.task)
    report["num_samples"] = len(ids)
    return report


def train(
    config: Config,
    resume: bool = False,
    run_dir: str | Path | None = None,
    verbose: bool = True,
    prepared: tuple[dict[str, Any], dict[str, Any], list[str]] | None = None,
    epoch_callback=None,
) -> dict[str, Any]:
    """Train per ``config``; write the run directory; return a summary with test metrics.

    ``epoch_callback(epoch, row)`` is handed to the Trainer (called after each validation; tune trials report and
    prune there). Test metrics are computed only when the loaders have a test split: a tune trial passes
    ``prepared`` without one, so trials never read the test data.

    ``prepared`` (the result of :func:`prepare`) lets several runs share processed data; a model ignores batch
    modalities it has no encoder for, so one set of loaders serves unimodal and fused models alike.

    The run owns its directory from before the first write to the end (training.run_lock.RunLock: a second
    run into it raises RunLockedError); full-disk write failures raise DiskFullError.

    Under torchrun (WORLD_SIZE > 1) every process calls this: one model is trained with DDP (see
    training.distributed; ``data.batch_size`` is per process), rank 0 holds the lock and writes the run
    directory and the test report; every rank returns the same summary (test metrics on rank 0 only).
    """
    from .training.launch import distributed_run

    run_dir = Path(run_dir or config.train.out_dir)
    with distributed_run(run_dir, config.train.device):
        return _train_locked(config, resume, run_dir, verbose, prepared, epoch_callback)


def _train_locked(
    config: Config,
    resume: bool,
    run_dir: Path,
    verbose: bool,
    prepared: tuple[dict[str, Any], dict[str, Any], list[str]] | None,
    epoch_callback=None,
) -> dict[str, Any]:
    from .training import Trainer, seed_everything

    run_dir = Path(run_dir or config.train.out_dir)
    seed_everything(config.train.seed)
    processors, loaders, labels = prepared if prepared is not None else prepare(config)
    if not config.model.head.labels:
        config.model.head = dataclasses.replace(config.model.head, labels=list(labels))
    processors = {name: processors[name] for name in config.model.modalities}
    model = MultimodalModel(config.model)
    model._processors = processors  # the same processors go into the saved model directory
    model.data_config = _absolute_data_paths(config_to_dict(config.data))
    finetune_summary = _apply_finetune(model, config)
    counts = model.parameter_counts()
    if verbose:
        print(
            f"model: {', '.join(config.model.modalities)} → {config.model.fusion.name} → {len(labels)} labels | "
            f"params {counts['total']:,} total, {counts['trainable']:,} trainable ({counts['trainable_share']:.1%})"
        )
    # Frozen encoders (augmentation off): train fusion + head from the on-disk feature cache.
    from .training.cached_training import cached_training_setup
    from .training.distributed import is_main, main_process_first

    verbose = verbose and is_main()
    with main_process_first():  # rank 0 builds the feature cache, the others then read it
        train_model, train_loaders, cache_report = cached_training_setup(model, loaders, config, run_dir, verbose)
    trainer = Trainer(
        train_model,
        config.train,
        train_loaders["train"],
        val_loader=train_loaders.get("val"),
        run_dir=run_dir,
        config=config,
        verbose=verbose,
        epoch_callback=epoch_callback,
    )
    started = time.perf_counter()
    fit = trainer.fit(resume=resume)
    train_seconds = time.perf_counter() - started
    best_dir = run_dir / "best"
    best = MultimodalModel.from_pretrained(best_dir) if (best_dir / "model.safetensors").exists() else model
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model_dir": str(best_dir),
        "fit": _jsonable(fit),
        "train_seconds": train_seconds,
        "parameters": counts,
        "finetune": finetune_summary,
        "feature_cache": cache_report,
        "config": config_to_dict(config),
    }
    if not is_main():  # the test report and metrics.json are rank 0's
        return summary
    if "test" in loaders and loaders["test"] is not None:
        summary["test"] = evaluate_model(best, loaders["test"], device=trainer.device if hasattr(trainer, "device") else "cpu")
    atomic_write_text(run_dir / "metrics.json", json.dumps(_jsonable(summary), indent=2))
    return summary


def _absolute_data_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Manifest paths as absolute paths, so `polymodal eval MODEL_DIR` finds the test split from any directory."""
    return {
        key: str(Path(value).resolve()) if key in ("train", "val", "test") and value else value
        for key, value in data.items()
    }


def _apply_finetune(model: MultimodalModel, config: Config) -> dict[str, Any] | None:
    from .training.finetune import apply_finetune, parameter_summary

    finetune = getattr(config, "finetune", None)
    # Per-component total / trainable parameters for metrics.json, with or without a finetune section.
    summary = parameter_summary(model) if finetune is None else apply_finetune(model, finetune)
    return _jsonable(summary.to_dict())
