"""The train recipe, top to bottom, for every task: config → task → data → model → finetune → Trainer → best
model → test metrics. Read it as the reference for doing it by hand::

    config = load_config("recipe.yaml", ["train.epochs=3"])
    summary = train(config)                    # run_dir/best = the model's save_pretrained

Used by ``polymodal train``, the demos, bench, tune. The run owns its directory from before the first write to
the end (training.run_lock.RunLock: a second run into it raises RunLockedError); full-disk write failures raise
DiskFullError. Under torchrun (WORLD_SIZE > 1) every process calls this: one model is trained with DDP (see
training.distributed; ``data.batch_size`` is per process), rank 0 holds the lock and writes the run directory and
the test metrics; every rank returns the same summary (test metrics on rank 0 only).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig, config_to_dict
from ..files import atomic_write_text
from ..jsonable import jsonable
from ..tasks import PreparedData, Task, get_task


def prepare(config: RunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
            processors: dict[str, Any] | None = None) -> PreparedData:
    """Processors, data loaders and the label list of ``config``'s task (labels from the data when not given)."""
    return get_task(config.task).prepare_data(config, splits, processors)


def train(
    config: RunConfig,
    resume: bool = False,
    run_dir: str | Path | None = None,
    verbose: bool = True,
    prepared: tuple[dict[str, Any], dict[str, Any], list[str]] | None = None,
    epoch_callback=None,
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Train per ``config``; write the run directory; return a summary with test metrics.

    ``prepared`` (the result of :func:`prepare`) lets several runs share processed data; a model ignores batch
    modalities it has no encoder for, so one set of loaders serves unimodal and fused models alike.
    ``epoch_callback(epoch, row)`` is handed to the Trainer (called after each validation; tune trials report and
    prune there). Test metrics are computed only when the loaders have a test split and ``evaluate_test``.
    """
    from ..training.launch import distributed_run

    run_dir = Path(run_dir or config.train.out_dir)
    with distributed_run(run_dir, config.train.device):
        return _train_locked(config, resume, run_dir, verbose, prepared, epoch_callback, evaluate_test)


def _train_locked(config: RunConfig, resume: bool, run_dir: Path, verbose: bool, prepared, epoch_callback,
                  evaluate_test: bool) -> dict[str, Any]:
    from ..training import Trainer, seed_everything
    from ..training.cached_training import cached_training_setup
    from ..training.distributed import is_main, local_objectives, main_process_first

    task = get_task(config.task)
    verbose = verbose and is_main()
    seed_everything(config.train.seed)
    processors, loaders, labels = prepared if prepared is not None else task.prepare_data(config)
    model = task.build_model(config, list(labels))
    modalities = getattr(config.model, "modalities", None) or {}
    if modalities:  # the processors the data went through are saved with the model
        model._processors = {name: processors[name] for name in modalities}
    extras = task.on_built(model, config, list(labels))
    finetune_summary = apply_finetune_section(model, config)
    counts = model.parameter_counts()
    if verbose:
        print(task.describe(model, config, list(labels)))
    # Frozen encoders (augmentation off): train the rest from the on-disk feature cache.
    train_model, train_loaders, cache_report = model, loaders, None
    if hasattr(model, "encoders"):
        with main_process_first():  # rank 0 builds the feature cache, the others then read it
            train_model, train_loaders, cache_report = cached_training_setup(model, loaders, config, run_dir,
                                                                             verbose)
    trainer = Trainer(train_model, config.train, train_loaders["train"], val_loader=train_loaders.get("val"),
                      run_dir=run_dir, config=config, verbose=verbose, epoch_callback=epoch_callback, task=task)
    started = time.perf_counter()
    fit = trainer.fit(resume=resume)
    train_seconds = time.perf_counter() - started
    best = _best_model(task, model, run_dir / "best")
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model_dir": str(run_dir / "best"),
        "task": task.name,
        "fit": jsonable(fit),
        "train_seconds": train_seconds,
        "parameters": counts,
        "finetune": finetune_summary,
        "feature_cache": cache_report,
        **extras,
        "config": config_to_dict(config),
    }
    if not is_main():  # the test report and metrics.json are rank 0's
        return summary
    if evaluate_test and loaders.get("test") is not None:
        with local_objectives():  # rank 0 alone: a contrastive loss must not wait for the other ranks
            summary["test"] = task.test_metrics(best, loaders["test"], config, device=trainer.device,
                                                context=extras)
    atomic_write_text(run_dir / "metrics.json", json.dumps(jsonable(summary), indent=2, allow_nan=False))
    return summary


def _best_model(task: Task, model, best_dir: Path):
    """The best checkpoint's model as saved (what a user gets from best/), or the trained model if none was kept."""
    from ..models.persistence import read_model_config

    if not (best_dir / "model.safetensors").exists():
        return model.eval()
    best = task.load_model(best_dir, read_model_config(best_dir))
    if getattr(model, "_processors", None) is not None:
        best._processors = model._processors
    return best


def apply_finetune_section(model, config: RunConfig) -> dict[str, Any] | None:
    """Apply ``config.finetune`` (LoRA / IA3 / prompt / frozen / linear probe per encoder) to any task's model;
    return per-component total / trainable parameters for metrics.json (with or without a finetune section)."""
    from ..peft import apply_finetune, parameter_summary

    finetune = getattr(config, "finetune", None)
    # A generation model trains in stages (model.stage); its finetune section sets only the feature cache.
    if getattr(model, "caches_attachments", False):
        finetune = None
    summary = parameter_summary(model) if finetune is None else apply_finetune(model, finetune)
    return jsonable(summary.to_dict())
