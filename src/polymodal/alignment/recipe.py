"""The alignment recipe, top to bottom: config → data → AlignmentModel → Trainer → best model → test metrics.

A config has the same data / train sections as a classification config; ``model`` is an AlignmentConfig and
an optional ``zeroshot`` section names the zero-shot classes and prompt templates::

    model:
      modalities: {image: {kind: image, processor: {image_size: 16, channels: 1}}, text: {kind: text}}
      embed_dim: 64
      objectives: [{name: clip}]
    data: {name: spoken-digits, batch_size: 64}
    train: {epochs: 5, lr: 2.0e-3}            # monitor defaults to val_loss (min) here
    zeroshot: {classnames: [zero, one, ...], templates: {image: ["a handwritten {}"]}}

``zeroshot`` is used by the test evaluation and saved with the model (config.json), so ``polymodal predict`` and
``Predictor`` label an image or audio input with the same classes and prompts. ``classnames`` are in label order
(default: the data's labels; for the built-in spoken digits the words zero … nine); ``templates`` are per modality
name (default: per kind, ``zeroshot.DEFAULT_TEMPLATES``). ``eval.class_names`` / ``eval.templates`` are the older
spelling of the same settings and still work.

    config = load_alignment_config("align.yaml", ["train.epochs=3"])
    summary = train_alignment(config)          # run_dir/best = AlignmentModel.save_pretrained

Labels are optional (pure pair data); when present, samples of the same label count as positives of each
other in the contrastive losses and in class-level retrieval, and enable zero-shot evaluation.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    bounds,
    config_to_dict,
    from_dict,
    read_config_file,
)
from ..jsonable import jsonable  # re-exported: alignment.demo and tests import it from here
from ..model import atomic_write_text
from .model import AlignmentConfig, AlignmentModel


@dataclass
class ZeroShotConfig:
    """Zero-shot classification of an alignment model: evaluated on the test split and saved with the model."""

    classnames: list[str] | None = None  # in label order; default: the labels (spoken digits: the words)
    templates: dict[str, list[str]] = field(default_factory=dict)  # per modality name, strings with one "{}"


@dataclass
class AlignmentEvalConfig:
    class_names: list[str] | None = None  # older spelling of zeroshot.classnames
    templates: dict[str, list[str]] = field(default_factory=dict)  # older spelling of zeroshot.templates
    ks: list[int] = field(default_factory=lambda: [1, 5, 10], metadata=bounds(ge=1))
    retrieval_metric: bool = True  # also log val_retrieval_R@1 each epoch (from the same pass as val_loss)


@dataclass
class AlignmentRunConfig:
    model: AlignmentConfig = field(default_factory=AlignmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(monitor="val_loss", monitor_mode="min"))
    eval: AlignmentEvalConfig = field(default_factory=AlignmentEvalConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)

    def __post_init__(self) -> None:
        # One source of truth downstream (test evaluation, `polymodal eval` of a run): eval.class_names /
        # eval.templates, filled from the zeroshot section when that is given.
        for new, old in (("classnames", "class_names"), ("templates", "templates")):
            mine, theirs = getattr(self.zeroshot, new), getattr(self.eval, old)
            if mine and theirs and mine != theirs:
                raise ConfigError(f"zeroshot.{new} and eval.{old} disagree; keep only zeroshot.{new}")
            if mine:
                setattr(self.eval, old, mine)
            elif theirs:
                setattr(self.zeroshot, new, theirs)


def is_alignment_config(data: dict[str, Any]) -> bool:
    """True for plain config data whose model section is an alignment model (it names objectives/embed_dim)."""
    model = data.get("model") if isinstance(data, dict) else None
    return isinstance(model, dict) and bool({"objectives", "embed_dim", "pairs"} & set(model))


def alignment_config_from_dict(data: dict[str, Any]) -> AlignmentRunConfig:
    """Plain data → AlignmentRunConfig. train.monitor defaults to val_loss (mode min): there is no accuracy."""
    data = dict(data)
    train = dict(data.get("train") or {})
    if "monitor" not in train:
        train["monitor"] = "val_loss"
        train.setdefault("monitor_mode", "min")
    data["train"] = train
    return from_dict(AlignmentRunConfig, data)


def load_alignment_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AlignmentRunConfig:
    data = read_config_file(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return alignment_config_from_dict(data)


# ---------------------------------------------------------------------------------------------- data


def _shim_config(config: AlignmentRunConfig) -> Config:
    """The classification Config the data layer reads (modalities, data, seed); the head is unused."""
    return Config(model=ModelConfig(modalities=dict(config.model.modalities)), data=config.data, train=config.train)


def default_class_names(config: AlignmentRunConfig, labels: list[str]) -> list[str]:
    if config.eval.class_names is not None:
        if len(config.eval.class_names) != len(labels):
            raise ConfigError(f"eval.class_names has {len(config.eval.class_names)} names for {len(labels)} labels "
                              f"{labels}")
        return list(config.eval.class_names)
    if config.data.name == "spoken-digits":
        from ..data.builtin.spoken_digits import WORDS

        return [WORDS[int(label)] for label in labels]
    return list(labels)


def zeroshot_record(config: AlignmentRunConfig, class_names: list[str] | None) -> dict[str, Any] | None:
    """What the model saves for zero-shot prediction: class names and, per non-text modality, the templates
    (configured or the kind's defaults). None when there are no class names (unlabelled pair data) or no text
    modality to embed them."""
    from .zeroshot import default_templates

    kinds = {name: mcfg.kind for name, mcfg in config.model.modalities.items()}
    if not class_names or "text" not in kinds.values():
        return None
    templates = {name: list(config.eval.templates.get(name) or default_templates(kind))
                 for name, kind in kinds.items() if kind != "text"}
    return {"classnames": list(class_names), "templates": templates}


def prepare_alignment_data(config: AlignmentRunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
                           processors: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, DataLoader], list[str]]:
    """Processors, loaders and the label list ([] for unlabelled pair data) of the configured splits."""
    from ..data import MultimodalDataset, build_processors, collect_labels, load_split_rows, read_manifest
    from ..data.errors import DataError
    from ..data.manifest import validate_rows

    shim = _shim_config(config)
    processors = processors or build_processors(config.model.modalities)
    rows_by_split = {}
    for split in splits:
        if config.data.name:
            rows = load_split_rows(shim, split)
        else:
            path = getattr(config.data, split, None)
            rows = None if not path else read_manifest(path, config.model.modalities, config.data.label_column,
                                                       config.data.id_column, require_label=False,
                                                       limit=config.data.limit)
        if rows is not None:
            rows_by_split[split] = rows
    if "train" in splits and "train" not in rows_by_split:
        raise DataError("alignment training needs a train split: set data.name or data.train")
    if not rows_by_split:
        raise DataError(f"config.data provides none of the splits {list(splits)}")
    if config.data.name:  # a built-in set knows its labels; a small subset may miss some of them
        from ..data import get_dataset

        labels = list(get_dataset(config.data.name).labels)
    else:
        labels = collect_labels(rows_by_split.get("train") or [r for rows in rows_by_split.values() for r in rows])
    label_to_index = {label: i for i, label in enumerate(labels)}
    generator = torch.Generator().manual_seed(config.train.seed)
    loaders = {}
    for split, rows in rows_by_split.items():
        kept, problems = validate_rows(rows, processors, labels or None, config.data.on_error, require_label=False,
                                       source=f"{split} split")
        dataset = MultimodalDataset(kept, processors, label_to_index)
        dataset.skipped = problems
        is_train = split == "train"
        loaders[split] = DataLoader(dataset, batch_size=config.data.batch_size if is_train else config.data.eval_batch_size,
                                    shuffle=is_train, generator=generator if is_train else None,
                                    num_workers=config.data.num_workers, persistent_workers=config.data.num_workers > 0,
                                    collate_fn=dataset.collate)
    return processors, loaders, labels


# ---------------------------------------------------------------------------------------------- training


def make_evaluate_fn(config: AlignmentRunConfig):
    """Trainer evaluate_fn: mean val loss, and (eval.retrieval_metric) mean R@1 over every retrieval direction
    (class-level when the data has labels, else instance-level) → logged as val_loss, val_retrieval_R@1, plus
    the instance-level mean R@1 (evaluate.instance_retrieval: the number `polymodal eval` reports as
    instance_mean_R@1) → val_instance_R@1."""
    from .evaluate import evaluate_alignment

    def evaluate(model: AlignmentModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
        report = evaluate_alignment(model, loader, device=device, ks=(1,), with_loss=True, zeroshot=False,
                                    instance=True)
        metrics = {"loss": report["loss"]}
        if config.eval.retrieval_metric:
            metrics["retrieval_R@1"] = report["summary"]["mean_R@1"]
            metrics["instance_R@1"] = report["summary"]["instance_mean_R@1"]
        return metrics

    return evaluate


def train_alignment(
    config: AlignmentRunConfig,
    resume: bool = False,
    run_dir: str | Path | None = None,
    verbose: bool = True,
    prepared: tuple[dict[str, Any], dict[str, DataLoader], list[str]] | None = None,
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Train per ``config``; write the run directory (best/, metrics.json with test metrics); return a summary.

    Like ``pipeline.train``: the run owns its directory (RunLockedError for a second run), full-disk write
    failures raise DiskFullError; under torchrun one model trains with DDP across the processes (the contrastive
    losses gather every rank's embeddings), rank 0 writes the run directory and evaluates the test split.
    """
    from ..training.launch import distributed_run

    run_dir = Path(run_dir or config.train.out_dir)
    with distributed_run(run_dir, config.train.device):
        return _train_alignment_locked(config, resume, run_dir, verbose, prepared, evaluate_test)


def _train_alignment_locked(
    config: AlignmentRunConfig,
    resume: bool,
    run_dir: Path,
    verbose: bool,
    prepared: tuple[dict[str, Any], dict[str, DataLoader], list[str]] | None,
    evaluate_test: bool,
) -> dict[str, Any]:
    from ..training import Trainer, seed_everything
    from ..training.distributed import is_main, local_objectives
    from .evaluate import evaluate_alignment

    verbose = verbose and is_main()
    seed_everything(config.train.seed)
    processors, loaders, labels = prepared if prepared is not None else prepare_alignment_data(config)
    model = AlignmentModel(config.model)
    model._processors = {name: processors[name] for name in config.model.modalities}
    counts = model.parameter_counts()
    if verbose:
        objectives = " + ".join(f"{o.weight:g}·{o.name}" for o in config.model.objectives)
        print(f"alignment model: {', '.join(model.modality_names)} → {config.model.embed_dim}-d | {objectives} | "
              f"params {counts['total']:,}")
    class_names = default_class_names(config, labels) if labels else config.zeroshot.classnames
    model.zeroshot = zeroshot_record(config, class_names)  # saved with best/ for predict / Predictor
    trainer = Trainer(model, config.train, loaders["train"], val_loader=loaders.get("val"), run_dir=run_dir,
                      config=config, evaluate_fn=make_evaluate_fn(config), verbose=verbose)
    started = time.perf_counter()
    fit = trainer.fit(resume=resume)
    train_seconds = time.perf_counter() - started
    best_dir = run_dir / "best"
    best = AlignmentModel.from_pretrained(best_dir) if (best_dir / "model.safetensors").exists() else model.eval()
    best._processors = model._processors
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model_dir": str(best_dir),
        "fit": fit,
        "train_seconds": train_seconds,
        "parameters": counts,
        "labels": labels,
        "class_names": class_names,
        "config": config_to_dict(config),
    }
    if not is_main():  # the test report and metrics.json are rank 0's
        return summary
    if evaluate_test and loaders.get("test") is not None:
        with local_objectives():  # rank 0 alone: the loss must not wait for the other ranks' embeddings
            summary["test"] = evaluate_alignment(best, loaders["test"], device=trainer.device, ks=config.eval.ks,
                                             class_names=class_names, templates=config.eval.templates or None)
    atomic_write_text(run_dir / "metrics.json", json.dumps(jsonable(summary), indent=2, allow_nan=False))
    return summary


__all__ = [
    "AlignmentEvalConfig",
    "AlignmentRunConfig",
    "ZeroShotConfig",
    "alignment_config_from_dict",
    "is_alignment_config",
    "load_alignment_config",
    "make_evaluate_fn",
    "prepare_alignment_data",
    "train_alignment",
    "zeroshot_record",
]
