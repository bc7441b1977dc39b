"""``polymodal demo``: the main job on the built-in spoken-digits data (recipes/demos/)."""

from __future__ import annotations

import argparse

from ..config import ConfigError
from .common import at_least


def add_parser(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="train and compare unimodal and fused models on the built-in spoken-digits data",
        description="The main job on the built-in data set: trains image-only, audio-only and several fusion models "
        "on spoken digits, evaluates them on the held-out test split and prints a comparison table "
        "(also written as JSON + Markdown to --out). --task align / finetune run the alignment and "
        "fine-tuning comparisons instead; --task tune a small hyperparameter study (needs optuna).",
    )
    demo.add_argument("--task", choices=["classify", "align", "finetune", "tune", "caption", "vqa", "chat"],
                      default="classify",
                      help="caption / vqa / chat: a vision/audio-language model against its blind and chance "
                      "baselines (recipes/demos/generation.py)")
    demo.add_argument("--out", default=None,
                      help="output directory (default: polymodal_out/demo/TASK, plus _quick for --quick)")
    demo.add_argument("--quick", action="store_true", help="a reduced run (seconds): fewer epochs, samples, fusions")
    demo.add_argument("--fusions", default=None, help="comma-separated fusion names to compare (default: a selection)")
    demo.add_argument("--epochs", type=at_least(1), default=None, help="epochs per model (default: recipe's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--pretrained",
        default=None,
        help="--task finetune: start from this Hugging Face audio checkpoint (hub name or local directory) "
        "instead of pretraining the audio encoder first",
    )


def _check_fusions(names: list[str]) -> None:
    """Refuse unknown --fusions names before the demo trains its unimodal baselines (minutes of work)."""
    from .. import components
    from ..registry import FUSIONS

    components.load_all()
    known = [*FUSIONS.names(), "late"]  # late fusion is a head per modality, not a registered fusion module
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(f"--fusions: unknown fusion {', '.join(map(repr, unknown)) or '(empty)'}; "
                          f"available: {', '.join(known)}")


def run(args: argparse.Namespace) -> int:
    fusions = [name.strip() for name in args.fusions.split(",")] if args.fusions is not None else None
    if fusions is not None:
        if args.task != "classify":
            raise ConfigError(f"--fusions applies to --task classify, not --task {args.task}")
        _check_fusions(fusions)
    # One folder per task and size, so that a quick run never overwrites a full one (or another task's results).
    args.out = args.out or f"polymodal_out/demo/{args.task}{'_quick' if args.quick else ''}"
    if args.task == "classify":
        from ..recipes.demos import classify

        classify.run_classification_demo(args.out, quick=args.quick, fusions=fusions, epochs=args.epochs,
                                         seed=args.seed)
    elif args.task == "align":
        from ..recipes.demos import align

        align.run_alignment_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    elif args.task in ("caption", "vqa", "chat"):
        from ..recipes.demos import generation

        generation.run_generation_demo(args.task, args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    elif args.task == "tune":
        from ..recipes.demos import tune

        tune.run_tune_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed)
    else:
        from ..recipes.demos import finetune

        finetune.run_finetune_demo(args.out, quick=args.quick, epochs=args.epochs, seed=args.seed,
                                   hf_checkpoint=args.pretrained)
    return 0
