"""``polymodal ensemble``: combine saved classifiers into one model directory (recipes.ensemble)."""

from __future__ import annotations

import argparse

from ..ensemble.model import METHODS
from ..recipes.ensemble import WEIGHTS_FROM


def add_parser(sub) -> None:
    ensemble = sub.add_parser(
        "ensemble",
        help="combine saved classifiers of one label set (mean / vote / weighted / stack) into one model",
        description="Combine saved classifiers (run or model directories) into one ensemble model directory that "
        "predict, eval, serve and eval --compare accept. weighted and stack are fitted on the validation split "
        "only; the ensemble is then compared with each member on the test split (paired CIs) in "
        "ensemble_report.md / .json. See docs/ENSEMBLE.md.",
    )
    ensemble.add_argument("runs", nargs="+", help="two or more run / model directories of the same task")
    ensemble.add_argument("--method", choices=METHODS, default="mean")
    ensemble.add_argument("--out", required=True, help="the ensemble model directory to write")
    ensemble.add_argument("--weights-from", choices=WEIGHTS_FROM, default="accuracy",
                          help="weighted: member weights ∝ validation accuracy, or ∝ exp(−validation log-loss)")
    ensemble.add_argument("--C", dest="C", type=float, default=1.0, help="stack: inverse L2 strength (default 1)")
    ensemble.add_argument("--val", default=None, metavar="MANIFEST",
                          help="validation manifest for weighted / stack (default: the members' own val split)")
    ensemble.add_argument("--test", default=None, metavar="MANIFEST",
                          help="test manifest of the report (default: the members' own test split)")
    ensemble.add_argument("--no-report", action="store_true", help="skip the test-split report")


def run(args: argparse.Namespace) -> int:
    from ..recipes.ensemble import build_ensemble, ensemble_report, format_report, write_report

    model = build_ensemble(args.runs, args.method, args.weights_from, args.C, val_data=args.val)
    model.save_pretrained(args.out)
    print(f"saved the {args.method} ensemble of {len(args.runs)} models to {args.out}")
    if not args.no_report:
        report = ensemble_report(model, data=args.test)
        paths = write_report(report, args.out)
        print(format_report(report), end="")
        print(f"report: {paths['md']}")
    return 0
