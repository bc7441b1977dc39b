"""Implementations of the CLI verbs (cli.py only parses arguments)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import Config, ConfigError, load_config


def _check_fusions(names: list[str]) -> None:
    """Refuse unknown --fusions names before the demo trains its unimodal baselines (minutes of work)."""
    from . import components
    from .registry import FUSIONS

    components.load_all()
    known = [*FUSIONS.names(), "late"]  # late fusion is a head per modality, not a registered fusion module
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(f"--fusions: unknown fusion {', '.join(map(repr, unknown)) or '(empty)'}; "
                          f"available: {', '.join(known)}")


def cmd_demo(args: argparse.Namespace) -> int:
    fusions = [name.strip() for name in args.fusions.split(",")] if args.fusions is not None else None
    if fusions is not None:
        if args.task != "classify":
            raise ConfigError(f"--fusions applies to --task classify, not --task {args.task}")
        _check_fusions(fusions)
    # One folder per task and size, so that a quick run never overwrites a full one (or another task's results).
    args.out = args.out or f"polymodal_out/demo/{args.task}{'_quick' if args.quick else ''}"
    if args.task == "classify":
        from .demo import run_classification_demo

        run_classification_demo(args.out, quick=args.quick, fusions=fusions, epochs=args.epochs, seed=args.seed)
    elif args.task == "align":
        from .alignment.demo import run_alignment_demo

        run_alignment_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    elif args.task == "tune":
        from .tune.demo import run_tune_demo

        run_tune_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    else:
        from .training.finetune_demo import run_finetune_demo

        run_finetune_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed, hf_checkpoint=args.pretrained)
    return 0


def _train_args(args: argparse.Namespace) -> list[str]:
    """The `polymodal train` arguments of ``args`` without --nproc (what each torchrun process receives)."""
    argv = [args.config, *[f"--set={item}" for item in args.overrides]]
    argv += [f"--out={args.out}"] if args.out else []
    argv += ["--resume"] if args.resume else []
    argv += [f"--finetune={args.finetune}"] if getattr(args, "finetune", None) else []
    return argv + (["--debug"] if getattr(args, "debug", False) else [])


def cmd_train(args: argparse.Namespace) -> int:
    from .metrics.classification import format_report_table
    from .recipes.train import train
    from .training.launch import launch_rank, launch_torchrun

    if getattr(args, "nproc", None):  # one model on N local processes: torchrun runs this command N times
        return launch_torchrun(args.nproc, _train_args(args))
    main_rank = launch_rank() == 0  # under torchrun only rank 0 prints the run's summary

    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    if getattr(args, "finetune", None):
        overrides.append(f"finetune.default={args.finetune}")
    config = load_config(args.config, overrides)
    summary = train(config, resume=args.resume)
    if "test" in summary and config.task == "classification":
        print(format_report_table(summary["test"]))
    if main_rank:
        print(f"run directory: {summary['run_dir']} (best model: {summary['model_dir']})")
    return 0


def eval_config_for(model, data_manifest: str | None, split: str) -> Config:
    """The config to evaluate a saved model (kept here for callers; the logic lives in evaluation.report)."""
    from .evaluation.report import eval_config_for as build

    return build(model, data_manifest, split)


def cmd_eval(args: argparse.Namespace) -> int:
    """`polymodal eval MODEL_OR_RUN_DIR`: the full report; `polymodal eval --compare A B`: paired bootstrap."""
    if args.compare:
        from .evaluation.compare import compare_runs, format_comparison

        result = compare_runs(*args.compare, metric=args.metric, n_resamples=args.bootstrap or 1000, seed=args.seed,
                              data=args.data, split=args.split)
        print(format_comparison(result))
        if args.out:
            from .files import atomic_write_text

            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "comparison.json", json.dumps(result, indent=2))
            print(f"comparison written to {out / 'comparison.json'}")
        return 0
    if not args.model:
        raise ValueError("eval needs a run or model directory (or --compare RUN_A RUN_B)")
    from .evaluation.report import ReportOptions, headline_rows, interval_notes
    from .recipes.evaluate import evaluate_path
    from .metrics.classification import format_report_table

    options = ReportOptions(
        bootstrap=1000 if args.bootstrap is None else args.bootstrap,
        seed=args.seed,
        robustness=not args.no_robustness,
        efficiency=not args.no_efficiency,
    )
    report, paths = evaluate_path(args.model, data=args.data, split=args.split, out=args.out, options=options,
                                  overrides=list(getattr(args, "overrides", None) or []))
    if report["quality"] is not None:
        print(format_report_table(report["quality"]["classification_report"]))
    print()
    for name, value, low, high in headline_rows(report):
        if value is not None:
            ci = "" if low is None else f"   95% CI [{low:.4f}, {high:.4f}]"
            print(f"{name:>14s}  {value:.4f}{ci}")
    for note in interval_notes(report):  # how the CIs were made; zero-width ones are flagged, not shown as real
        print(f"note: {note}")
    eff = report.get("efficiency")
    if eff:
        print(f"efficiency: {eff['params']['total']:,} params, {eff['flops_per_sample']:,} FLOPs/sample, "
              f"latency p50 {eff['latency_ms']['p50']:.2f} ms (batch 1), "
              f"{eff['throughput_samples_per_s']:.0f} samples/s (batch {eff['throughput_batch_size']})")
    rob = report.get("robustness") or {}
    for name, removed in (rob.get("removed") or {}).items():
        print(f"without {name}: {rob['metric']} {removed['value']:.4f} (drop {removed['drop']:+.4f})")
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .evaluation.bench import run_bench

    run_bench(args.suite, args.out, quick=args.quick)
    return 0


def sample_from_args(args: argparse.Namespace) -> dict[str, str]:
    """{modality: raw input} from --image / --audio / --text / --input NAME=VALUE (predict, explain)."""
    sample = {name: value for name, value in (("image", args.image), ("audio", args.audio), ("text", args.text)) if value}
    for item in args.input:
        if "=" not in item:
            raise ValueError(f"--input {item!r} must look like NAME=VALUE")
        name, value = item.split("=", 1)
        sample[name] = value
    if not sample:
        raise ValueError("give at least one input: --image FILE, --audio FILE, --text STRING or --input NAME=VALUE")
    return sample


def _check_backend(model: str, backend: str) -> None:
    """Say which --backend a folder needs instead of "not a model directory" / "manifest.json not found"."""
    is_export = (Path(model) / "manifest.json").is_file()
    if backend == "torch" and is_export:
        raise ValueError(f"{model} is an ONNX export, not a model directory: add --backend onnx")
    if backend == "onnx" and not is_export and any((Path(model) / sub / "model.safetensors").is_file()
                                                   for sub in (".", "best", "model")):
        raise ValueError(f"{model} is a model (or run) directory, not an ONNX export: export it first, "
                         f"polymodal export {model} --format onnx --out DIR, or drop --backend onnx")


def cmd_predict(args: argparse.Namespace) -> int:
    sample = sample_from_args(args)
    if getattr(args, "backend", "torch") == "onnx":  # an export directory, run by onnxruntime
        from .inference.export import OnnxPredictor as predictor_class
    else:
        from .inference import Predictor as predictor_class
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if getattr(args, "classes", None) else None
    if getattr(args, "classes", None) is not None and not classes:
        raise ValueError("--classes needs at least one class name, e.g. --classes cat,dog")
    _check_backend(args.model, getattr(args, "backend", "torch"))
    predictor = predictor_class(args.model, overrides=list(getattr(args, "overrides", None) or []),
                                classnames=classes, templates=list(getattr(args, "template", None) or []) or None)
    if (classes or getattr(args, "template", None)) and not predictor.is_alignment:
        raise ValueError("--classes / --template apply to alignment models (zero-shot); this model is a classifier "
                         f"with the labels it was trained on ({', '.join(predictor.labels[:5])}, ...)")
    prediction = predictor.predict(sample)
    if args.json:
        print(json.dumps(prediction.to_dict(), indent=2, allow_nan=False))
        return 0
    label = prediction.label if isinstance(prediction.label, str) else ", ".join(prediction.label) or "(none)"
    how = "zero-shot from" if predictor.is_alignment else "from"
    print(f"prediction: {label}   ({how} {', '.join(prediction.modalities)})")
    for label, prob in prediction.top(args.top):
        print(f"  {label:>12s}  {prob:.4f}  {'#' * round(prob * 40)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .config.finetune import STRATEGY_DESCRIPTIONS
    from .presets import describe_presets
    from .registry import CONNECTORS, DATASETS, ENCODERS, FUSIONS, HEADS, OBJECTIVES

    # each registry imports the package that fills it on first read (registry.py): no load_all needed
    registries = {"encoders": ENCODERS, "fusions": FUSIONS, "connectors": CONNECTORS, "heads": HEADS,
                  "objectives": OBJECTIVES, "datasets": DATASETS}
    for kind, registry in registries.items():
        if args.kind and args.kind != kind:
            continue
        print(f"{kind}:")
        for name, description in registry.describe().items():
            print(f"  {name:22s} {description}")
    if args.kind in (None, "finetune"):
        print("finetune (--finetune STRATEGY, finetune.default / finetune.encoders.<modality>):")
        for name, description in STRATEGY_DESCRIPTIONS.items():
            print(f"  {name:22s} {description}")
    if args.kind in (None, "presets"):
        print("presets (YAML files under polymodal/presets/<kind>/; CLIP: encoder option preset=NAME):")
        rows = [(f"{kind}/{name}", text) for kind, presets in describe_presets().items() for name, text in presets.items()]
        width = max([22, *(len(label) for label, _ in rows)])
        for label, description in rows:
            print(f"  {label:{width}s} {description}")
    return 0


def cmd_export_data(args: argparse.Namespace) -> int:
    from .data import export_dataset

    paths = export_dataset(args.name, args.out, limit=args.limit)
    listing = ", ".join(f"{split}: {path}" for split, path in paths.items()) if isinstance(paths, dict) else paths
    print(f"exported {args.name} to {args.out} ({listing})")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from .alignment.cli import cmd_retrieve as run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .inference.serve.cli import cmd_serve as run

    return run(args)


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune.cli import cmd_tune as run

    return run(args)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .ensemble.cli import cmd_ensemble as run

    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .inference.export.cli import cmd_export as run

    return run(args)


def cmd_compress(args: argparse.Namespace) -> int:
    from .inference.export.cli import cmd_compress as run

    return run(args)


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain.cli import cmd_explain as run

    return run(args)


def cmd_runs(args: argparse.Namespace) -> int:
    from .training.run_index import format_runs, list_runs

    rows = list_runs(args.dir)
    print(json.dumps(rows, indent=2) if args.json else format_runs(rows))
    return 0
