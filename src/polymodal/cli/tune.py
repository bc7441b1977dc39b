"""``polymodal tune``: a hyperparameter search with Optuna (recipes.tune); optuna is imported on use."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import positive


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="hyperparameter search (Optuna): trials on the validation split, the best model evaluated on test once",
        description="Search the config keys of a space file (float / log-float / int / categorical over any key, "
        "e.g. train.lr, model.fusion.name, finetune.lora.r) with a seeded TPE sampler and median or "
        "successive-halving pruning on the per-epoch validation metric. The study lives in --study-dir "
        "(SQLite): the same command again continues it, --trials being the total. At the end the best "
        "trial's model is evaluated on the test split once and report.md / report.html / history.png are "
        "written. Needs the tune extra: pip install 'polymodal[tune]'. See docs/TUNE.md.",
    )
    tune.add_argument("config", help="YAML or JSON config of a classifier (the base of every trial)")
    tune.add_argument("--space", required=True, help="search space YAML (see configs/tune_space_example.yaml)")
    tune.add_argument("--trials", type=positive, default=20, help="total finished trials wanted (default %(default)s)")
    tune.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                      help="stop starting new trials after S seconds (this invocation)")
    tune.add_argument("--study-dir", default=None, metavar="DIR",
                      help="study directory (default: polymodal_out/tune/<config name>)")
    tune.add_argument("--jobs", type=positive, default=1,
                      help="trials at a time, in threads (torch threads are divided between them; not "
                      "bit-reproducible above 1)")
    tune.add_argument("--pruner", choices=["median", "halving", "none"], default="median")
    tune.add_argument("--metric", default=None, help="validation metric to optimise (default: the space's, else "
                      "train.monitor), e.g. val_accuracy, val_macro_f1, val_loss")
    tune.add_argument("--direction", choices=["maximize", "minimize"], default=None,
                      help="default: the space's, else minimize for a *loss metric and maximize otherwise")
    tune.add_argument("--seed", type=int, default=None, help="sampler seed (default: train.seed)")
    tune.add_argument("--keep-checkpoints", action="store_true",
                      help="keep every trial's model and resume checkpoint (default: only the best model)")
    tune.add_argument("--no-test", action="store_true", help="skip the final test evaluation")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a value of the base config (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..recipes.tune import TuneOptions, run_study
    from ..tune.report import format_summary

    study_dir = args.study_dir or str(Path("polymodal_out") / "tune" / Path(args.config).stem)
    options = TuneOptions(trials=args.trials, study_dir=study_dir, timeout=args.timeout, jobs=args.jobs,
                          pruner=args.pruner, metric=args.metric, direction=args.direction, seed=args.seed,
                          overrides=list(args.overrides), keep_checkpoints=args.keep_checkpoints,
                          evaluate_test=not args.no_test)
    summary = run_study(args.config, args.space, options)
    print(format_summary(summary))
    return 0
