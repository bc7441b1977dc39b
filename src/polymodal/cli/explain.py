"""``polymodal explain``: argument parsing and the command (:func:`run` calls
:func:`polymodal.explain.api.explain`).

    polymodal explain MODEL_DIR [--image FILE] [--audio FILE] [--text TEXT] [--input NAME=VALUE] --out DIR
                      [--target LABEL] [--steps 64] [--baseline KIND=NAME] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
from typing import Any

from ..explain.errors import ExplainError
from .common import add_sample_inputs, positive, sample_from_args

BASELINES = {"image": ("black", "mean"), "audio": ("zero", "silence"), "text": ("pad",)}  # as api.explain takes them


def add_parser(sub: Any) -> None:
    """Register ``explain`` on the top-level subparsers of ``polymodal``."""
    parser = sub.add_parser(
        "explain",
        help="explain one prediction of a classifier: integrated gradients, attention maps, Shapley values per "
        "modality (PNGs + an HTML page)",
        description="For one sample (any subset of the model's modalities): integrated gradients per input (image "
        "heat map, log-mel time-frequency map, text token scores; Captum, pip install 'polymodal[explain]'), "
        "attention maps of transformer / cross-attention fusions and attention rollout of ViT encoders, and the "
        "Shapley value of each modality for the explained class. Writes index.html, the PNGs and "
        "explanation.json to --out.",
    )
    parser.add_argument("model", help="model directory (or run directory) of a classifier")
    add_sample_inputs(parser)
    parser.add_argument("--out", required=True, help="output directory (index.html, PNGs, explanation.json)")
    parser.add_argument("--target", default=None, metavar="LABEL",
                        help="the label to explain (default: the predicted one)")
    parser.add_argument("--steps", type=positive, default=64,
                        help="integrated-gradients integration steps (default: %(default)s; raise it when the "
                        "page reports a large convergence delta)")
    parser.add_argument("--baseline", action="append", default=[], metavar="KIND=NAME",
                        help="integrated-gradients baseline per kind: image=black|mean, audio=zero|silence, "
                        "text=pad (repeatable; default: the first of each)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a processor option of the saved model, e.g. --set model.modalities.image."
                        "processor.max_pixels=100000000 (repeatable)")


def parse_baselines(items: list[str]) -> dict[str, str]:
    """``["image=mean"]`` → {"image": "mean"}; ExplainError naming the bad item and the choices."""
    baselines: dict[str, str] = {}
    for item in items:
        kind, _, name = item.partition("=")
        kind, name = kind.strip(), name.strip()
        if kind not in BASELINES or name not in BASELINES[kind]:
            choices = "; ".join(f"{k}={'|'.join(v)}" for k, v in BASELINES.items())
            raise ExplainError(f"--baseline {item!r}: expected KIND=NAME with one of {choices}")
        baselines[kind] = name
    return baselines


def format_summary(summary: dict[str, Any]) -> str:
    """The lines `polymodal explain` prints: prediction, explained target, Shapley per modality, files."""
    prediction, target = summary["prediction"], summary["target"]
    p_pred = prediction["probabilities"][prediction["label"]]
    lines = [f"prediction: {prediction['label']} (p={p_pred:.4f}) from {', '.join(summary['inputs'])}",
             f"explained:  {target['label']} (p={target['probability']:.4f})"]
    shapley = summary.get("shapley") or {}
    if shapley.get("shapley"):
        lines.append("modality contribution to p(target) (Shapley values; they sum to p(all) - p(none) = "
                     f"{shapley['full']:.4f} - {shapley['empty']:.4f}):")
        lines += [f"  {name:>12s}  {shapley['shapley'][name]:+.4f}" for name in shapley["players"]]
    for name, attribution in (summary.get("attributions") or {}).items():
        if attribution.get("warning"):
            lines.append(f"warning: {name}: {attribution['warning']} (--steps)")
    out = summary["out_dir"]
    lines.append(f"written to {out}: " + ", ".join(summary["files"]))
    lines.append(f"open {out}/index.html to see the page")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`polymodal explain`: :func:`~polymodal.explain.api.explain` on the given inputs, then its summary."""
    from ..explain.api import explain

    sample = sample_from_args(args)
    summary = explain(args.model, sample, args.out, target=args.target, steps=args.steps,
                      baselines=parse_baselines(args.baseline), device=args.device, overrides=list(args.overrides))
    print(format_summary(summary))
    return 0
