"""Compression table: fp32 vs dynamic int8 (onnxruntime, and PyTorch in memory) on the built-in spoken digits.

    python benchmarks/compress_int8.py                 # trains the small model below (seconds), writes the table
    python benchmarks/compress_int8.py --model DIR     # a trained classifier (e.g. from `polymodal demo`) instead
    python benchmarks/compress_int8.py --timing        # adds latency p50 (batch 1, 32) and throughput columns

Writes benchmarks/results/compress_int8.md (+ .json). Accuracy: test split (500 samples, unseen speaker and
images) with a 95% Clopper–Pearson interval. Sizes: bytes on disk of the model directory / export directory. The
int8 directory is the ONNX export with MatMul / Gemm weights quantized by onnxruntime (``quantize_int8``); the
PyTorch int8 model (``torch.ao.quantization.quantize_dynamic``) cannot be saved without pickle, so it has no size.
Timings (``--timing``) are medians over repeated runs after a warm-up, 1 thread; take them on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MODALITIES = {
    "image": {"kind": "image", "encoder": "image_vit",
              "options": {"dim": 64, "depth": 2, "heads": 4, "patch_size": 2, "dropout": 0.0},
              "processor": {"image_size": 8, "channels": 1, "mean": [0.3], "std": [0.4]}},
    "audio": {"kind": "audio", "encoder": "audio_transformer", "options": {"dim": 64, "depth": 2, "heads": 4, "dropout": 0.0},
              "processor": {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 20, "max_seconds": 1.0}},
}


STUDENT_ENCODERS = {"image": "image_cnn", "audio": "audio_cnn"}  # conv students: few parameters
STUDENT_NAME = "image_cnn + audio_cnn [16, 32], concat 32"


def train_small(out: Path, epochs: int = 3, seed: int = 0) -> Path:
    """The image + audio classifier of tests/inference/test_compress.py, trained on all 2000 training samples."""
    import torch
    import torch.nn.functional as F

    from polymodal.config import ModelConfig, from_dict
    from polymodal.inference.export.inputs import make_batch
    from polymodal.inference.export.parity import builtin_samples
    from polymodal.models import MultimodalModel

    torch.manual_seed(seed)
    model = MultimodalModel(from_dict(ModelConfig, {"modalities": MODALITIES, "fusion": {"name": "concat", "dim": 64},
                                                    "head": {"labels": [str(d) for d in range(10)]}}))
    kinds = {name: spec["kind"] for name, spec in MODALITIES.items()}
    samples = builtin_samples(kinds, 2000, "train")
    from polymodal.data import get_dataset

    labels = torch.tensor([int(r["label"]) for r in get_dataset("spoken-digits").records("train")])
    train = make_batch(model.processors, list(kinds), samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * 63, pct_start=0.1)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            batch = type(train)(inputs={m: {k: v[rows] for k, v in d.items()} for m, d in train.inputs.items()},
                                present={m: p[rows] for m, p in train.present.items()})
            loss = F.cross_entropy(model(batch).logits, labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    model.save_pretrained(out)
    return out


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(call, test, repeats: int) -> dict[str, float]:
    """Latency p50 (ms) at batch 1 and 32, and throughput (samples/s) at batch 32, of ``call(batch)``."""
    def first(n):
        return type(test)(inputs={m: {k: v[:n] for k, v in d.items()} for m, d in test.inputs.items()},
                          present={m: p[:n] for m, p in test.present.items()})

    one, many = first(1), first(32)
    p50_1 = 1000 * median_seconds(lambda: call(one), repeats)
    p50_32 = 1000 * median_seconds(lambda: call(many), repeats)
    return {"p50_ms_batch1": p50_1, "p50_ms_batch32": p50_32, "samples_per_s_batch32": 32 / (p50_32 / 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained classifier directory (default: train the small model)")
    parser.add_argument("--timing", action="store_true", help="measure latency and throughput (quiet machine)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-distill", action="store_true", help="skip the distilled student row")
    parser.add_argument("--student-epochs", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compress_int8.md"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="compress-") as tmp:
        rows, n_test = run(args, Path(tmp))
    write_table(args, rows, n_test)


def run(args, work: Path) -> tuple[list[dict], int]:
    import torch

    from polymodal.data import get_dataset
    from polymodal.inference import load_model
    from polymodal.inference.compress import directory_bytes, quantize_dynamic_torch, quantize_int8
    from polymodal.inference.export import export_onnx
    from polymodal.inference.export.inputs import make_batch
    from polymodal.inference.export.parity import builtin_samples
    from polymodal.inference.export.runtime import OnnxModel
    from polymodal.metrics.intervals import proportion_ci

    model_dir = Path(args.model) if args.model else train_small(work / "model")
    model, model_dir = load_model(model_dir)
    export_onnx(model_dir, work / "fp32")
    quantize_int8(model_dir, work / "int8")
    kinds = {name: model.config.modalities[name].kind for name in model.modality_names}
    records = get_dataset("spoken-digits").records("test")
    test = make_batch(model.processors, list(kinds), builtin_samples(kinds, len(records), "test"))
    labels = torch.tensor([model.labels.index(r["label"]) for r in records])
    student = None
    if not args.no_distill:
        from polymodal.inference.compress import distill
        from polymodal.models import MultimodalModel

        spec = {"modalities": {name: {"encoder": STUDENT_ENCODERS[kind], "options": {"channels": [16, 32]}}
                               for name, kind in kinds.items() if kind in STUDENT_ENCODERS},
                "fusion": {"name": "concat", "dim": 32}}
        distill(model_dir, spec, work / "student", data={"name": "spoken-digits", "batch_size": 32},
                train={"epochs": args.student_epochs, "lr": 3e-3, "seed": 0}, temperature=2.0, alpha=0.7)
        student = MultimodalModel.from_pretrained(work / "student" / "best")
    runners = {
        "fp32 PyTorch (model.safetensors)": (lambda b: model(b).logits, directory_bytes(model_dir)),
        "fp32 ONNX (onnxruntime)": (OnnxModel(work / "fp32", threads=1).__call__, directory_bytes(work / "fp32")),
        "int8 ONNX (quantize_int8, onnxruntime)": (OnnxModel(work / "int8", threads=1).__call__,
                                                   directory_bytes(work / "int8")),
        "int8 PyTorch (quantize_dynamic_torch, in memory)": (quantize_dynamic_torch(model), None),
    }
    if student is not None:
        runners[f"distilled student ({STUDENT_NAME}, T=2, alpha=0.7)"] = (
            student, directory_bytes(work / "student" / "best"))
    rows = []
    for name, (run, size) in runners.items():
        call = (lambda b, run=run: run(b).logits) if isinstance(run, torch.nn.Module) else run
        with torch.no_grad():
            logits = call(test)
            logits = logits.logits if hasattr(logits, "logits") else logits
            correct = int((logits.argmax(-1) == labels).sum())
            row = {"model": name, "bytes": size, "accuracy": proportion_ci(correct, len(labels))}
            if args.timing:
                row.update(measure(call, test, args.repeats))
        rows.append(row)
        print(json.dumps(row))
    return rows, len(labels)


def write_table(args, rows: list[dict], n_test: int) -> None:
    import torch

    def size(row):
        return "— (pickle only)" if row["bytes"] is None else f"{row['bytes'] / 1024:.0f} KiB"

    def acc(row):
        a = row["accuracy"]
        return f"{100 * a['point']:.1f}% [{100 * a['low']:.1f}, {100 * a['high']:.1f}]"

    def timing(row, key, fmt):
        return fmt.format(row[key]) if key in row else "not measured"

    source = f"`--model {args.model}`" if args.model else "the small image+audio model trained by the script (seed 0)"
    lines = [
        "# Compression: fp32 vs dynamic int8",
        "",
        f"Command: `python benchmarks/compress_int8.py{' --timing' if args.timing else ''}`; model: {source}; "
        f"torch {torch.__version__}. Accuracy on the spoken-digits test split (n={n_test}), 95% "
        "Clopper–Pearson interval.",
        "",
        "| model | size on disk | accuracy [95% CI] | latency p50 batch 1 | latency p50 batch 32 | throughput batch 32 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {size(row)} | {acc(row)} | {timing(row, 'p50_ms_batch1', '{:.2f} ms')} | "
                     f"{timing(row, 'p50_ms_batch32', '{:.2f} ms')} | "
                     f"{timing(row, 'samples_per_s_batch32', '{:.0f} samples/s')} |")
    if not args.timing:
        lines += ["", "Timings not measured in this run (shared machine); rerun with `--timing` on a quiet one."]
    if args.no_distill:
        lines += ["", "Distilled student: skipped (`--no-distill`)."]
    else:
        lines += ["", f"Distilled student: `polymodal.inference.compress.distill` ({args.student_epochs} epochs on the "
                  "2000 training samples, Trainer defaults otherwise), size = its saved model directory."]
    lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
