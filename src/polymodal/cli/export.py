"""``polymodal export``: a saved model as ONNX graphs with its preprocessing settings and a parity check.

    polymodal export MODEL_DIR --format onnx --out DIR [--opset 17] [--overwrite] [--no-verify]

Torch, onnx and onnxruntime are imported only when the command runs (``polymodal --help`` stays fast).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from .common import positive


def add_parser(sub: Any) -> None:
    """Register ``export`` on the top-level subparsers of ``polymodal``."""
    parser = sub.add_parser(
        "export",
        help="export a model to ONNX (one graph per entry point) with its preprocessing settings and a parity check",
        description="Write a saved model as ONNX graphs (classifier logits, or one embedding graph per alignment "
        "tower) with a dynamic batch axis, processors.json (preprocessing settings for runtimes without Python) "
        "and manifest.json. Each graph is run with onnxruntime on other inputs and compared with PyTorch "
        "(max abs difference must stay <= 1e-4). Run the export with `polymodal predict DIR --backend onnx`. "
        "Needs pip install 'polymodal[export]'.",
    )
    parser.add_argument("model", help="model directory (or run directory)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: %(default)s)")
    parser.add_argument("--out", required=True, help="export directory to write (new or empty, or --overwrite)")
    parser.add_argument("--opset", type=positive, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the onnxruntime-vs-PyTorch parity check (faster; the numbers are then unchecked)")


def human_bytes(size: int | None) -> str:
    """1536 → '1.5 KiB' (sizes on disk in the tables)."""
    if size is None:
        return "n/a"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # unreachable; keeps type checkers content


def predict_hint(out_dir: str | Path, manifest: dict[str, Any]) -> str:
    """The `polymodal predict ... --backend onnx` command line for this export's modalities."""
    flags = []
    alignment = manifest.get("task") == "alignment"
    for name, record in manifest.get("modalities", {}).items():
        kind = record.get("kind") if isinstance(record, dict) else None
        if alignment and kind == "text":
            continue  # an aligner predicts zero-shot labels from images / audio; texts are for `retrieve`
        if name == kind and kind in ("image", "audio"):
            flags.append(f"--{kind} {kind.upper()}_FILE")
        elif name == kind == "text":
            flags.append("--text TEXT")
        else:
            flags.append(f"--input {name}={'TEXT' if kind == 'text' else 'FILE'}")
    return f"polymodal predict {shlex.quote(str(out_dir))} --backend onnx {' '.join(flags)}".rstrip()


def format_export(report: dict[str, Any], manifest: dict[str, Any], verified: bool) -> str:
    """The table `polymodal export` prints: one row per graph (its inputs and parity)."""
    rows = []
    for entry, graph in manifest["graphs"].items():
        inputs = ", ".join(item["name"] for item in graph["inputs"])
        diff = report["graphs"][entry]["max_abs_diff"]
        rows.append((entry, human_bytes(graph.get("bytes")), inputs,
                     f"{diff:.2e}" if verified and diff is not None else "not checked"))
    width = max(5, *(len(r[0]) for r in rows))
    lines = [f"exported {report['architecture']} ({report['task']}) to {report['out_dir']}: ONNX opset "
             f"{report['opset']}, {report['precision']}, {human_bytes(report['bytes'])} in all",
             f"{'graph':{width}s}  {'size':>10s}  {'max |onnx - torch|':>18s}  inputs"]
    lines += [f"{entry:{width}s}  {size:>10s}  {diff:>18s}  {inputs}" for entry, size, inputs, diff in rows]
    if verified:
        atol = (manifest.get("parity") or {}).get("atol")
        lines.append(f"parity: every graph within {atol:g} of PyTorch on batches unlike the traced one")
    else:
        lines.append("parity: not checked (--no-verify); run without it to compare with PyTorch")
    lines.append(f"predict with: {predict_hint(report['out_dir'], manifest)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`polymodal export`: :func:`~polymodal.inference.export.export_onnx`, then the table of graphs."""
    from ..inference.export import export_onnx, read_manifest

    report = export_onnx(args.model, args.out, opset=args.opset, overwrite=args.overwrite, verify=not args.no_verify)
    print(format_export(report, read_manifest(args.out), verified=not args.no_verify))
    return 0


