"""``polymodal runs``: the run directories under a folder as a table (or JSON rows)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    runs = sub.add_parser("runs", help="list past runs under a directory (config hash, task, metrics, time)",
                          description="List the run directories under DIR (default: .) as a table: task, config "
                          "hash, status, best validation metric, test accuracy, epochs, start and duration.")
    runs.add_argument("dir", nargs="?", default=".", help="folder to search (default: the current one)")
    runs.add_argument("--json", action="store_true", help="print JSON rows")


def run(args: argparse.Namespace) -> int:
    from ..training.run_index import format_runs, list_runs

    rows = list_runs(args.dir)
    print(json.dumps(rows, indent=2) if args.json else format_runs(rows))
    return 0
