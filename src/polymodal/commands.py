"""Implementations of the CLI verbs (cli.py only parses arguments)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import Config, DataConfig, from_dict, load_config


def cmd_demo(args: argparse.Namespace) -> int:
    fusions = args.fusions.split(",") if args.fusions else None
    if args.task == "classify":
        from .demo import run_classification_demo

        run_classification_demo(args.out, quick=args.quick, fusions=fusions, epochs=args.epochs, seed=args.seed)
    elif args.task == "align":
        from .alignment.demo import run_alignment_demo

        run_alignment_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    else:
        from .training.finetune_demo import run_finetune_demo

        run_finetune_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .evaluation.classification import format_report_table
    from .pipeline import train

    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    config = load_config(args.config, overrides)
    summary = train(config, resume=args.resume)
    if "test" in summary:
        print(format_report_table(summary["test"]))
    print(f"run directory: {summary['run_dir']} (best model: {summary['model_dir']})")
    return 0


def eval_config_for(model, data_manifest: str | None, split: str) -> Config:
    """The config to evaluate a saved model: its own modalities + the data it was trained on (or a manifest)."""
    data = dict(model.data_config or {})
    if data_manifest:
        data.update({"name": None, "train": None, "val": None, "test": None, split: data_manifest})
    elif not data:
        raise ValueError("this model directory does not record its training data: pass --data MANIFEST")
    config = Config()
    config.model = model.config
    config.data = from_dict(DataConfig, data, "data")
    return config


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.classification import format_report_table
    from .inference import resolve_model_dir
    from .model import MultimodalModel, atomic_write_text
    from .pipeline import evaluate_model, prepare

    if args.compare:
        from .evaluation.compare import compare_runs

        result = compare_runs(*args.compare)
        print(json.dumps(result, indent=2))
        return 0
    if not args.model:
        raise ValueError("eval needs a run or model directory (or --compare RUN_A RUN_B)")
    model_dir = resolve_model_dir(args.model)
    model = MultimodalModel.from_pretrained(model_dir)
    config = eval_config_for(model, args.data, args.split)
    _, loaders, _ = prepare(config, splits=(args.split,))
    report = evaluate_model(model, loaders[args.split])
    print(format_report_table(report))
    out = Path(args.out) if args.out else model_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2))
    print(f"metrics written to {out / 'metrics.json'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import Predictor

    sample = {name: value for name, value in (("image", args.image), ("audio", args.audio), ("text", args.text)) if value}
    for item in args.input:
        if "=" not in item:
            raise ValueError(f"--input {item!r} must look like NAME=VALUE")
        name, value = item.split("=", 1)
        sample[name] = value
    if not sample:
        raise ValueError("give at least one input: --image FILE, --audio FILE, --text STRING or --input NAME=VALUE")
    prediction = Predictor(args.model).predict(sample)
    if args.json:
        print(json.dumps({"label": prediction.label, "probabilities": prediction.probabilities,
                          "modalities": prediction.modalities}, indent=2))
        return 0
    print(f"prediction: {prediction.label}   (from {', '.join(prediction.modalities)})")
    for label, prob in prediction.top(args.top):
        print(f"  {label:>12s}  {prob:.4f}  {'#' * round(prob * 40)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from . import components
    from .registry import DATASETS, ENCODERS, FUSIONS, HEADS, OBJECTIVES

    components.load_all()
    registries = {"encoders": ENCODERS, "fusions": FUSIONS, "heads": HEADS, "objectives": OBJECTIVES, "datasets": DATASETS}
    for kind, registry in registries.items():
        if args.kind and args.kind != kind:
            continue
        print(f"{kind}:")
        for name, description in registry.describe().items():
            print(f"  {name:22s} {description}")
    return 0


def cmd_export_data(args: argparse.Namespace) -> int:
    from .data import export_dataset

    paths = export_dataset(args.name, args.out, limit=args.limit)
    print(f"exported {args.name} to {args.out}: {paths}")
    return 0
