"""``polymodal bench``: train + evaluate a grid and write a leaderboard (recipes.bench)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="train + evaluate a grid (fusions x encoders x fine-tuning x seeds) and write a leaderboard",
        description="Run a bench suite (YAML; `spoken-digits` names the built-in one) and write leaderboard.md / "
        ".csv / .html (mean ± std over seeds + efficiency columns), runs.csv and bench.json to --out.",
    )
    bench.add_argument("suite", help="suite YAML file, or a built-in suite name (spoken-digits)")
    bench.add_argument("--quick", action="store_true", help="the suite's reduced grid (minutes on a laptop CPU)")
    bench.add_argument("--out", default="polymodal_out/bench", help="output directory (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from ..recipes.bench import run_bench

    run_bench(args.suite, args.out, quick=args.quick)
    return 0
