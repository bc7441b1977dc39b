"""``polymodal predict``: the prediction of a model's task (label + probabilities; an alignment model's zero-shot
label or embeddings) for raw inputs (any subset of a model's modalities) or every row of a manifest
(``--data rows.jsonl --out predictions.jsonl``: ``inference.batch.predict_manifest``), with the saved model or its
ONNX export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_processor_overrides, add_sample_inputs, positive, sample_from_args


def add_parser(sub) -> None:
    pred = sub.add_parser(
        "predict",
        help="predict the label of raw inputs (any subset of modalities), or of every row of a manifest",
        description="Predict with a saved model on raw files/strings. Give any subset of the model's modalities "
        "with --image/--audio/--text, or --input NAME=VALUE for custom modality names; or a whole manifest with "
        "--data ROWS.jsonl|csv --out PREDICTIONS.jsonl (one JSON line per row: its id + the prediction; labels not "
        "needed). An alignment model gives a zero-shot label for image / audio inputs: the closest of the class "
        "names saved with it (--classes to choose others), or with --embed its embeddings. A generation model "
        "(captioning, vqa, transcription, chat) answers --text (the prompt) about --image / --audio, or every row of "
        "a generation manifest (messages or prompt + image / audio paths) with the generated text.",
    )
    pred.add_argument("model", help="model directory (or run directory); with --backend onnx an export directory")
    pred.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                      help="torch: the saved model; onnx: an export of `polymodal export` / `compress --method int8`, "
                      "run with onnxruntime (default: %(default)s)")
    add_sample_inputs(pred)
    pred.add_argument("--data", default=None, metavar="MANIFEST",
                      help="predict every row of this JSONL / CSV manifest (columns named like the model's "
                      "modalities, optional id; labels are ignored) and write --out")
    pred.add_argument("--out", default=None, metavar="FILE", help="with --data: the predictions file (JSON lines)")
    pred.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                      help="with --data: stop at the first bad row (default) or skip bad rows with a warning")
    pred.add_argument("--batch-size", type=positive, default=32, help="with --data: rows per forward pass")
    pred.add_argument("--embed", action="store_true",
                      help="alignment models: unit-norm embeddings of the inputs instead of a zero-shot label")
    pred.add_argument("--threshold", type=float, default=0.5,
                      help="multilabel classifiers: labels with probability >= this (default: %(default)s)")
    pred.add_argument("--top", type=positive, default=5, help="how many labels to show")
    pred.add_argument("--json", action="store_true", help="print JSON")
    pred.add_argument("--classes", default=None, metavar="A,B,...",
                      help="alignment models: comma-separated zero-shot class names (default: those saved with it)")
    pred.add_argument("--template", action="append", default=[], metavar="TEXT",
                      help="alignment models: a prompt template with one {} for the class name, e.g. "
                      "'a handwritten {}' (repeatable; default: those saved with the model)")
    add_processor_overrides(pred)


def _check_backend(model: str, backend: str) -> None:
    """Say which --backend a folder needs instead of "not a model directory" / "manifest.json not found"."""
    is_export = (Path(model) / "manifest.json").is_file()
    if backend == "torch" and is_export:
        raise ValueError(f"{model} is an ONNX export, not a model directory: add --backend onnx")
    if backend == "onnx" and not is_export and any((Path(model) / sub / "model.safetensors").is_file()
                                                   for sub in (".", "best", "model")):
        raise ValueError(f"{model} is a model (or run) directory, not an ONNX export: export it first, "
                         f"polymodal export {model} --format onnx --out DIR, or drop --backend onnx")


def _check_data_args(args: argparse.Namespace) -> None:
    inputs = [flag for flag in ("image", "audio", "text") if getattr(args, flag, None)] + (["input"] if args.input else [])
    if args.data is None:
        if args.out is not None:
            raise ValueError("--out goes with --data MANIFEST (batch prediction); a single prediction prints")
        return
    if inputs:
        raise ValueError(f"--data predicts a manifest; drop --{' / --'.join(inputs)} (or drop --data to predict one "
                         "sample)")
    if args.out is None:
        raise ValueError("--data needs --out FILE for the predictions (JSON lines), e.g. --out predictions.jsonl")


def run(args: argparse.Namespace) -> int:
    _check_data_args(args)
    sample = sample_from_args(args) if args.data is None else None
    if getattr(args, "backend", "torch") == "onnx":  # an export directory, run by onnxruntime
        from ..inference.export import OnnxPredictor as predictor_class
    else:
        from ..inference import Predictor as predictor_class
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if getattr(args, "classes", None) else None
    if getattr(args, "classes", None) is not None and not classes:
        raise ValueError("--classes needs at least one class name, e.g. --classes cat,dog")
    _check_backend(args.model, getattr(args, "backend", "torch"))
    # the model's task refuses options it does not take (--classes for a classifier) and inputs it cannot answer
    predictor = predictor_class(args.model, overrides=list(getattr(args, "overrides", None) or []),
                                classnames=classes, templates=list(getattr(args, "template", None) or []) or None,
                                threshold=args.threshold)
    if args.data is not None:
        from ..inference.batch import predict_manifest

        summary = predict_manifest(predictor, args.data, args.out, on_error=args.on_error,
                                   batch_size=args.batch_size, embed=args.embed)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            skipped = f"; skipped {len(summary['skipped'])} bad rows" if summary["skipped"] else ""
            print(f"wrote {summary['written']} {predictor.task_name} predictions of {summary['rows']} rows to "
                  f"{summary['out']}{skipped}")
        return 0
    if args.embed:
        embedded = predictor.predict_processed(predictor.make_batch([predictor.check(sample, embed=True)]), embed=True)
        print(json.dumps(embedded[0].to_dict(), indent=2 if args.json else None, allow_nan=False))
        return 0
    prediction = predictor.predict(sample)
    if args.json:
        print(json.dumps(prediction.to_dict(), indent=2, allow_nan=False))
        return 0
    if getattr(predictor, "generates", False):  # --text is the prompt; the answer is text, not a label
        print(prediction.text)
        return 0
    label = prediction.label if isinstance(prediction.label, str) else ", ".join(prediction.label) or "(none)"
    how = "zero-shot from" if predictor.task_name == "alignment" else "from"
    print(f"prediction: {label}   ({how} {', '.join(prediction.modalities)})")
    for label, prob in prediction.top(args.top):
        print(f"  {label:>12s}  {prob:.4f}  {'#' * round(prob * 40)}")
    return 0
