"""`polymodal demo`: the main job on the built-in spoken-digits data.

Trains image-only, audio-only and several fused image+audio classifiers with the same small encoders and
the same budget, evaluates each on the held-out test split (unseen speaker, unseen images) and writes a
comparison table. Text is left out on purpose: the built-in texts name the digit, so any model given text
would score 100% and teach nothing about fusion (it is used by the alignment demo instead).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...config import Config, from_dict
from ...files import atomic_write_text
from ...presets import load_preset

DEFAULT_FUSIONS = ["concat", "sum", "weighted", "gated", "low_rank_tensor", "tensor", "cross_attention", "transformer", "late"]
QUICK_FUSIONS = ["concat", "gated"]

# The modality specs are data: polymodal/presets/encoders/demo-{image,audio}.yaml (`polymodal list presets`).
IMAGE = load_preset("encoders", "demo-image")
AUDIO = load_preset("encoders", "demo-audio")


def spoken_digits_config(
    modalities: list[str], fusion: str, epochs: int, seed: int, out_dir: str, limit: int | None = None
) -> Config:
    """The demo recipe as a Config (the same thing configs/spoken_digits_fusion.yaml spells out)."""
    specs = {"image": IMAGE, "audio": AUDIO}
    return from_dict(
        Config,
        {
            "model": {
                "modalities": {name: specs[name] for name in modalities},
                "fusion": {"name": fusion, "dim": 64},
                "head": {"dropout": 0.1},
            },
            "data": {"name": "spoken-digits", "batch_size": 32, "limit": limit},
            "train": {
                "epochs": epochs,
                "lr": 2e-3,
                "weight_decay": 0.01,
                "warmup_ratio": 0.05,
                "seed": seed,
                "progress": False,
                "out_dir": out_dir,
            },
        },
    )


def run_classification_demo(
    out: str | Path, quick: bool = False, fusions: list[str] | None = None, epochs: int | None = None, seed: int = 0
) -> dict[str, Any]:
    from ..train import prepare, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = epochs or (4 if quick else 8)
    limit = 600 if quick else None
    fusions = fusions or (QUICK_FUSIONS if quick else DEFAULT_FUSIONS)
    plan = [("image only", ["image"], "concat"), ("audio only", ["audio"], "concat")]
    plan += [(f"image+audio {name}", ["image", "audio"], name) for name in fusions]

    started = time.perf_counter()
    shared_config = spoken_digits_config(["image", "audio"], "concat", epochs, seed, str(out / "runs"), limit)
    print(f"polymodal demo: spoken digits (image + audio), {len(plan)} models, {epochs} epochs each")
    prepared = prepare(shared_config)
    print(f"  data ready in {time.perf_counter() - started:.1f}s")

    rows, details = [], {}
    for title, modalities, fusion in plan:
        run_name = title.replace(" ", "_").replace("+", "_")
        config = spoken_digits_config(modalities, fusion, epochs, seed, str(out / "runs" / run_name), limit)
        summary = train(config, prepared=prepared, verbose=False)
        test = summary["test"]
        row = {
            "model": title,
            "fusion": fusion if len(modalities) > 1 else "-",
            "modalities": "+".join(modalities),
            "params": summary["parameters"]["total"],
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "train_seconds": summary["train_seconds"],
        }
        rows.append(row)
        details[title] = summary
        print(
            f"  {title:28s} acc {row['test_accuracy']:.3f}  macro-F1 {row['test_macro_f1']:.3f}  "
            f"params {row['params']:>8,}  {row['train_seconds']:.1f}s"
        )

    wall = time.perf_counter() - started
    table = format_table(rows)
    best_fused = max((r for r in rows if "+" in r["modalities"]), key=lambda r: r["test_accuracy"])
    unimodal_best = max(r["test_accuracy"] for r in rows if "+" not in r["modalities"])
    verdict = (
        f"best fusion ({best_fused['fusion']}) {best_fused['test_accuracy']:.3f} vs best unimodal {unimodal_best:.3f}: "
        + ("fusion wins" if best_fused["test_accuracy"] > unimodal_best else "fusion does NOT beat the unimodal models")
    )
    print()
    print(table)
    print()
    print(verdict)
    print(f"wall time {wall:.0f}s; results in {out}/results.json and results.md")
    best_dir = details[best_fused["model"]]["model_dir"]
    print(next_steps(best_dir))
    result = {"task": "classify", "quick": quick, "epochs": epochs, "seed": seed, "rows": rows,
              "verdict": verdict, "wall_seconds": wall, "runs": details}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(
        out / "results.md",
        f"# polymodal demo: spoken digits\n\nTest split: held-out speaker, unseen images. {epochs} epochs per model, "
        f"seed {seed}.\n\n{table}\n\n{verdict}\n\nWall time: {wall:.0f} s.\n",
    )
    return result


def next_steps(model_dir: str) -> str:
    """What to do with the best fused model: try it, serve it, export it (printed after the table)."""
    return (
        f"\nnext: try the best fused model on files, serve it over HTTP (page + API), or export it to ONNX:\n"
        f"  polymodal predict {model_dir} --image DIGIT.png --audio DIGIT.wav\n"
        f"  polymodal serve {model_dir}        # http://127.0.0.1:8000 (needs polymodal[serve])\n"
        f"  polymodal export {model_dir} --format onnx --out {model_dir}_onnx"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    header = "| model | fusion | params | test accuracy | macro-F1 | train time (s) |"
    lines = [header, "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['fusion']} | {r['params']:,} | {r['test_accuracy']:.3f} | "
            f"{r['test_macro_f1']:.3f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines)
