"""``polymodal export-data``: a built-in data set written as files + manifests (to see the manifest format)."""

from __future__ import annotations

import argparse

from .common import positive


def add_parser(sub) -> None:
    exp = sub.add_parser(
        "export-data",
        help="write a built-in data set as files + manifests (to see the manifest format)",
    )
    exp.add_argument("name", nargs="?", default="spoken-digits")
    exp.add_argument("--out", default="spoken_digits_export")
    exp.add_argument("--limit", type=positive, default=None, help="rows per split")


def run(args: argparse.Namespace) -> int:
    from ..data import export_dataset

    paths = export_dataset(args.name, args.out, limit=args.limit)
    listing = ", ".join(f"{split}: {path}" for split, path in paths.items()) if isinstance(paths, dict) else paths
    print(f"exported {args.name} to {args.out} ({listing})")
    return 0
