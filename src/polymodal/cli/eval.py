"""``polymodal eval``: the evaluation report of a trained model (recipes.evaluate), or ``--compare RUN_A RUN_B``
(recipes.compare)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_processor_overrides, at_least


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluation report of a trained model (quality + CIs, efficiency, robustness), or compare two runs",
        description="Evaluate a model on a split of the data set it was trained on (default test) or on a manifest. "
        "Writes metrics.json (classification report; generation tasks: their metrics with CIs), predictions.json "
        "and report.json / report.md / "
        "report.html (plots embedded): quality with bootstrap 95% CIs, calibration, efficiency (params, "
        "FLOPs, latency, throughput, memory, size) and robustness (modality ablations, corruptions). "
        "--compare RUN_A RUN_B runs a paired bootstrap on the samples both were evaluated on.",
    )
    ev.add_argument("model", nargs="?", help="run directory (uses its best/ model) or model directory")
    ev.add_argument("--data", default=None, help="a manifest (JSONL/CSV) to evaluate on instead of the split")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--out", default=None, help="output directory (default: <run or model dir>/eval_<split>)")
    ev.add_argument("--bootstrap", type=at_least(0), default=None, metavar="N",
                    help="bootstrap resamples for the confidence intervals / comparison (default 1000; 0 = none)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the corruption noise")
    ev.add_argument("--no-robustness", action="store_true", help="skip modality ablations and corruption curves")
    ev.add_argument("--no-efficiency", action="store_true", help="skip FLOPs / latency / memory measurements")
    ev.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), default=None,
                    help="paired-bootstrap comparison of two runs / eval directories on the same samples")
    ev.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"],
                    help="headline metric for --compare (default: %(default)s)")
    add_processor_overrides(ev)


def _compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare import format_comparison
    from ..recipes.compare import compare_runs

    result = compare_runs(*args.compare, metric=args.metric, n_resamples=args.bootstrap or 1000, seed=args.seed,
                          data=args.data, split=args.split)
    print(format_comparison(result))
    if args.out:
        from ..files import atomic_write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.json", json.dumps(result, indent=2))
        print(f"comparison written to {out / 'comparison.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """`polymodal eval MODEL_OR_RUN_DIR`: the full report; `polymodal eval --compare A B`: paired bootstrap."""
    if args.compare:
        return _compare(args)
    if not args.model:
        raise ValueError("eval needs a run or model directory (or --compare RUN_A RUN_B)")
    from ..evaluation.report import ReportOptions, headline_rows, interval_notes, kind_for_report
    from ..metrics.classification import format_report_table
    from ..recipes.evaluate import evaluate_path

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
    kind = kind_for_report(report)
    for line in kind.console(report) if kind is not None else []:  # the kind's own lines (generation: per type)
        print(line)
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
