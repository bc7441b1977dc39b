"""The `polymodal` command line: demo, train, eval, predict, list, export-data, retrieve, bench."""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 --set model.fusion.name=gated (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polymodal",
        description="Multimodal deep learning on text, images and audio: build, train, evaluate and ship fused models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="train and compare unimodal and fused models on the built-in spoken-digits data",
        description="The main job on the built-in data set: trains image-only, audio-only and several fusion models "
        "on spoken digits, evaluates them on the held-out test split and prints a comparison table "
        "(also written as JSON + Markdown to --out). --task align / finetune run the alignment and "
        "fine-tuning comparisons instead.",
    )
    demo.add_argument("--task", choices=["classify", "align", "finetune"], default="classify")
    demo.add_argument("--out", default="polymodal_out/demo", help="output directory (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a reduced run (seconds): fewer epochs, samples, fusions")
    demo.add_argument("--fusions", default=None, help="comma-separated fusion names to compare (default: a selection)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per model (default: recipe's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--pretrained",
        default=None,
        help="--task finetune: start from this Hugging Face audio checkpoint (hub name or local directory) "
        "instead of pretraining the audio encoder first",
    )

    train = sub.add_parser(
        "train",
        help="train a model from a YAML/JSON config",
        description="Train a model from a config file. The run directory (train.out_dir) receives the resolved "
        "config, metrics.jsonl/csv, checkpoints, the best model (best/) and test metrics.json.",
    )
    train.add_argument("config", help="YAML or JSON config (see configs/)")
    _add_overrides(train)
    train.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    train.add_argument("--out", default=None, help="run directory (overrides train.out_dir)")
    train.add_argument("--finetune", default=None, metavar="STRATEGY",
                       help="shorthand for --set finetune.default=STRATEGY (full, frozen, linear_probe, lora, "
                       "loha, lokr, ia3, prompt)")

    ev = sub.add_parser(
        "eval",
        help="evaluation report of a trained model (quality + CIs, efficiency, robustness), or compare two runs",
        description="Evaluate a model on a split of the data set it was trained on (default test) or on a manifest. "
        "Writes metrics.json (classification report), predictions.json and report.json / report.md / "
        "report.html (plots embedded): quality with bootstrap 95% CIs, calibration, efficiency (params, "
        "FLOPs, latency, throughput, memory, size) and robustness (modality ablations, corruptions). "
        "--compare RUN_A RUN_B runs a paired bootstrap on the samples both were evaluated on.",
    )
    ev.add_argument("model", nargs="?", help="run directory (uses its best/ model) or model directory")
    ev.add_argument("--data", default=None, help="a manifest (JSONL/CSV) to evaluate on instead of the split")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--out", default=None, help="output directory (default: <run or model dir>/eval_<split>)")
    ev.add_argument("--bootstrap", type=int, default=None, metavar="N",
                    help="bootstrap resamples for the confidence intervals / comparison (default 1000; 0 = none)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the corruption noise")
    ev.add_argument("--no-robustness", action="store_true", help="skip modality ablations and corruption curves")
    ev.add_argument("--no-efficiency", action="store_true", help="skip FLOPs / latency / memory measurements")
    ev.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), default=None,
                    help="paired-bootstrap comparison of two runs / eval directories on the same samples")
    ev.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"],
                    help="headline metric for --compare (default: %(default)s)")

    pred = sub.add_parser(
        "predict",
        help="predict the label of raw inputs (any subset of modalities)",
        description="Predict with a saved model on raw files/strings. Give any subset of the model's modalities "
        "with --image/--audio/--text, or --input NAME=VALUE for custom modality names.",
    )
    pred.add_argument("model", help="model directory (or run directory)")
    pred.add_argument("--image", default=None, help="image file")
    pred.add_argument("--audio", default=None, help="audio file")
    pred.add_argument("--text", default=None, help="text string")
    pred.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="modality by name")
    pred.add_argument("--top", type=int, default=5, help="how many labels to show")
    pred.add_argument("--json", action="store_true", help="print JSON")

    lst = sub.add_parser("list", help="list registered encoders, fusions, heads, objectives and data sets")
    lst.add_argument("kind", nargs="?", choices=["encoders", "fusions", "heads", "objectives", "datasets"])

    exp = sub.add_parser(
        "export-data",
        help="write a built-in data set as files + manifests (to see the manifest format)",
    )
    exp.add_argument("name", nargs="?", default="spoken-digits")
    exp.add_argument("--out", default="spoken_digits_export")
    exp.add_argument("--limit", type=int, default=None, help="rows per split")
    bench = sub.add_parser(
        "bench",
        help="train + evaluate a grid (fusions x encoders x fine-tuning x seeds) and write a leaderboard",
        description="Run a bench suite (YAML; `spoken-digits` names the built-in one) and write leaderboard.md / "
        ".csv / .html (mean ± std over seeds + efficiency columns), runs.csv and bench.json to --out.",
    )
    bench.add_argument("suite", help="suite YAML file, or a built-in suite name (spoken-digits)")
    bench.add_argument("--quick", action="store_true", help="the suite's reduced grid (minutes on a laptop CPU)")
    bench.add_argument("--out", default="polymodal_out/bench", help="output directory (default: %(default)s)")
    from .alignment.cli import add_retrieve_parser  # the `retrieve` verb lives with the alignment code

    add_retrieve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from . import commands

        return getattr(commands, f"cmd_{args.command.replace('-', '_')}")(args) or 0
    except (ConfigError, FileNotFoundError, KeyError, ValueError, TypeError) as err:
        # Known user errors: one clear line, no traceback. Set POLYMODAL_DEBUG=1 for the traceback.
        if os.environ.get("POLYMODAL_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"polymodal {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
