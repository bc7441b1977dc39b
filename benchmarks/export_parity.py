"""ONNX export parity table: every registered fusion (+ late), every encoder preset, an alignment model, and tiny
Hugging Face backbones — exported with ``polymodal.inference.export.export_onnx`` and compared with PyTorch on real
inputs from the built-in spoken-digits data (batch 1, batch 5, batch 5 with a modality missing per sample).

    python benchmarks/export_parity.py            # writes benchmarks/results/export_parity.md (+ .json)
    python benchmarks/export_parity.py --no-hf    # skip the Hugging Face rows

Each row: exported? max abs difference of the graph output (logits, or embeddings per tower) against PyTorch, or
the reason it cannot export (the ExportError message). Threshold: 1e-4. The HF rows use the tiny random models of
tests/hf_fixtures.py (built offline); the finetune rows inject LoRA / IA3 / prompt tuning and perturb their weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # hf_fixtures: tiny HF models written offline

from polymodal.inference.export.parity import (  # noqa: E402
    AUDIO_PROCESSOR,
    DEFAULT_ATOL,
    parity_cases,
    parity_row,
    tiny_modality,
)

# HF backbone (tests/hf_fixtures family) → modality kind and processor options suited to the built-in data.
HF_CASES = {
    "bert": ("text", {"max_length": 16}),
    "vit": ("image", {}),
    "resnet": ("image", {}),
    "convnext": ("image", {}),
    "wav2vec2": ("audio", {"max_seconds": 1.0}),
    "ast": ("audio", {"max_seconds": 1.0}),
    "clip": ("image", {"image_size": 32}),  # the tiny CLIP vision tower takes 32 px
}


def hf_cases() -> list[dict]:
    from hf_fixtures import tiny_hf_model_dir

    cases = []
    for family, (kind, processor) in HF_CASES.items():
        try:
            directory = str(tiny_hf_model_dir(family))
        except Exception as err:  # a family this transformers version cannot build: say so in the table
            cases.append({"name": f"hf {family}", "error": f"tiny model not available: {err}"})
            continue
        partner = "image" if kind == "text" else "text"
        modalities = {kind: {"kind": kind, "encoder": "hf", "pretrained": directory, "processor": processor},
                      partner: tiny_modality("image_cnn" if partner == "image" else "text_transformer")}
        cases.append({"name": f"hf {family} ({kind})", "modalities": modalities, "fusion": "concat"})
    return cases


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "export_parity.md"))
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face backbone rows")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import onnx
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    cases = parity_cases() + ([] if args.no_hf else hf_cases())
    rows = []
    for case in cases:
        if "error" in case:
            row = {"name": case["name"], "encoders": {}, "fusion": None, "exported": False, "max_abs_diff": None,
                   "ok": False, "why": case["error"], "seconds": 0.0}
        else:
            row = parity_row(**case)
        rows.append(row)
        status = "ok" if row["ok"] else "FAIL" if row["exported"] else "not exported"
        print(f"{row['name']:<60} {status:<13} {fmt(row['max_abs_diff'])}  {row['why'][:120]}", flush=True)

    lines = [
        "# ONNX export parity",
        "",
        f"Command: `python benchmarks/export_parity.py{' --no-hf' if args.no_hf else ''}`. torch {torch.__version__}, "
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}, "
        "TorchScript exporter, opset 17, CPU, 1 thread.",
        "",
        "Max abs difference of the exported graph's output (classifier logits, or each alignment tower's embedding) "
        "against PyTorch on real spoken-digits inputs (test split): batch 1, batch 5, and batch 5 with one modality "
        f"missing per sample. Pass: ≤ {DEFAULT_ATOL:g}. Tiny random models (see `polymodal.inference.export.parity`); "
        "audio keeps each recording's own length (dynamic time axis: "
        f"`max_seconds={AUDIO_PROCESSOR['max_seconds']}`), text pads to the longest in the batch.",
        "",
        "| model | encoders | fusion | exported | max abs diff | ≤ 1e-4 | why not |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        encoders = ", ".join(f"{m}={e}" for m, e in row.get("encoders", {}).items())
        encoders = encoders.replace(str(Path.home()), "~")
        fusion = row.get("fusion") or ("towers" if row["name"].startswith("alignment") else "—")
        why = row["why"].replace("|", "\\|") if not row["ok"] else ""
        lines.append(f"| {row['name']} | {encoders} | {fusion} | {'yes' if row['exported'] else 'no'} | "
                     f"{fmt(row['max_abs_diff'])} | {'yes' if row['ok'] else 'no'} | {why} |")
    passed = sum(row["ok"] for row in rows)
    lines += ["", f"{passed} / {len(rows)} rows export and match within {DEFAULT_ATOL:g}.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    # seconds are left out: wall-clock on whatever machine ran this is no result
    kept = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    out.with_suffix(".json").write_text(json.dumps(kept, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
