"""``polymodal train``: train a model of any task from a config (recipes.train), on one or N local processes."""

from __future__ import annotations

import argparse

from ..config import load_config
from .common import add_overrides, at_least


def add_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from a YAML/JSON config",
        description="Train a model from a config file. The run directory (train.out_dir) receives the resolved "
        "config, metrics.jsonl/csv, checkpoints, the best model (best/) and test metrics.json.",
    )
    train.add_argument("config", help="YAML or JSON config (see configs/)")
    add_overrides(train)
    train.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    train.add_argument("--out", default=None, help="run directory (overrides train.out_dir)")
    train.add_argument("--finetune", default=None, metavar="STRATEGY",
                       help="shorthand for --set finetune.default=STRATEGY (full, frozen, linear_probe, lora, "
                       "loha, lokr, ia3, prompt; `polymodal list finetune` describes them)")
    train.add_argument("--nproc", type=at_least(1), default=None, metavar="N",
                       help="train one model on N processes of this machine (launches torchrun; data.batch_size is "
                       "per process, see docs/DISTRIBUTED.md)")


def _train_args(args: argparse.Namespace) -> list[str]:
    """The `polymodal train` arguments of ``args`` without --nproc (what each torchrun process receives)."""
    argv = [args.config, *[f"--set={item}" for item in args.overrides]]
    argv += [f"--out={args.out}"] if args.out else []
    argv += ["--resume"] if args.resume else []
    argv += [f"--finetune={args.finetune}"] if getattr(args, "finetune", None) else []
    return argv + (["--debug"] if getattr(args, "debug", False) else [])


def run(args: argparse.Namespace) -> int:
    from ..metrics.classification import format_report_table
    from ..recipes.train import train
    from ..training.launch import launch_rank, launch_torchrun

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
