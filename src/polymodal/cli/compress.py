"""``polymodal compress``: a smaller copy of a classifier, by dynamic int8 quantization of its ONNX export or by
distillation into a student.

    polymodal compress MODEL_DIR --method int8 --out DIR [--overwrite]
    polymodal compress MODEL_DIR --method distill --student STUDENT.yaml --out RUN_DIR [--temperature T] [--alpha A]
                                 [--set train.epochs=3 ...]

Torch, onnx and onnxruntime are imported only when the command runs (``polymodal --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .export import human_bytes, predict_hint

DEFAULT_TEMPERATURE = 2.0  # distill()'s defaults, repeated here so --help shows them without importing torch
DEFAULT_ALPHA = 0.5
STUDENT_SECTIONS = ("model", "train", "data")  # what a student file / --set may hold


def _number(text: str, low: float, high: float | None, low_open: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        bound = f"> {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
    return value


def _temperature(text: str) -> float:
    return _number(text, 0.0, None, low_open=True)


def _alpha(text: str) -> float:
    return _number(text, 0.0, 1.0, low_open=False)


def add_parser(sub: Any) -> None:
    """Register ``compress`` on the top-level subparsers of ``polymodal``."""
    parser = sub.add_parser(
        "compress",
        help="a smaller copy of a classifier: dynamic int8 quantization, or distillation into a student",
        description="--method int8: the model's ONNX export with Linear (MatMul / Gemm) weights quantized to int8 "
        "by onnxruntime (run it with `polymodal predict OUT --backend onnx`; needs the export extra). "
        "--method distill: train the smaller model described by --student (a YAML file with the student's model "
        "section: encoders, fusion, head; optional train / data sections) on the teacher's soft targets "
        "(Hinton et al. 2015) with the usual Trainer; --out is its run directory (the student in OUT/best).",
    )
    parser.add_argument("model", help="model directory (or run directory) of the classifier to compress")
    parser.add_argument("--method", choices=["int8", "distill"], required=True)
    parser.add_argument("--out", required=True, help="int8: directory to write; distill: the student's run directory")
    parser.add_argument("--overwrite", action="store_true", help="int8: replace an earlier int8 export in --out")
    parser.add_argument("--student", default=None, metavar="STUDENT.yaml",
                        help="distill: the student's model section (modalities / fusion / head), optionally under "
                        "model: next to train: and data: sections")
    parser.add_argument("--temperature", type=_temperature, default=None,
                        help=f"distill: softmax temperature T of the soft targets (default {DEFAULT_TEMPERATURE:g})")
    parser.add_argument("--alpha", type=_alpha, default=None,
                        help=f"distill: weight of the soft-target term, 1 - alpha on the labels (default "
                        f"{DEFAULT_ALPHA:g})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="distill: override a student value, e.g. --set train.epochs=3 --set "
                        "model.fusion.dim=32 --set data.limit=200 (repeatable)")


def _check_method_options(args: argparse.Namespace) -> None:
    """Refuse options of the other method instead of ignoring them silently."""
    if args.method == "distill":
        if not args.student:
            raise ConfigError("--method distill needs --student STUDENT.yaml: the student's model section "
                              "(modalities / fusion / head), e.g. {fusion: {name: concat, dim: 32}}")
        if args.overwrite:
            raise ConfigError("--overwrite applies to --method int8; a distillation --out is a run directory "
                              "(choose a new one)")
        return
    given = [flag for flag, value in (("--student", args.student), ("--temperature", args.temperature),
                                      ("--alpha", args.alpha), ("--set", args.overrides or None)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to --method distill, not --method {args.method}")


def read_student(path: str, overrides: list[str]) -> dict[str, Any]:
    """The student file as sections {model, train, data} with --set applied. A file without a ``model:`` key is
    the model section itself. Raises ConfigError naming the file or key."""
    from ..config import apply_overrides, read_config_file

    raw = read_config_file(path)
    sections = dict(raw) if "model" in raw else {"model": raw}
    unknown = [key for key in sections if key not in STUDENT_SECTIONS]
    if unknown:
        raise ConfigError(f"student file {path}: unknown section(s) {', '.join(map(repr, unknown))}; it holds the "
                          f"student's model section, optionally under model: next to train: and data:")
    for key in STUDENT_SECTIONS:
        if sections.get(key) is not None and not isinstance(sections[key], dict):
            raise ConfigError(f"student file {path}: {key} must be a mapping, got {type(sections[key]).__name__}")
        sections[key] = dict(sections.get(key) or {})
    for text in overrides:
        key = text.split("=", 1)[0].split(".", 1)[0].strip()
        if key not in STUDENT_SECTIONS:
            raise ConfigError(f"--set {text!r}: compress --method distill takes model.*, train.* or data.* keys")
    return apply_overrides(sections, list(overrides))


def teacher_data_section(model_dir: str) -> dict[str, Any] | None:
    """The data section saved with the teacher (config.json's ``data``), to merge --set data.* into."""
    from ..inference.predictor import resolve_model_dir
    from ..models import CONFIG_NAME

    path = resolve_model_dir(model_dir) / CONFIG_NAME
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read as JSON: {err}") from err
    data = payload.get("data") if isinstance(payload, dict) else None
    return dict(data) if isinstance(data, dict) else None


def _accuracy(report: dict[str, Any] | None, key: str) -> str:
    value = (report or {}).get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def format_int8(report: dict[str, Any]) -> str:
    fp32, int8 = report["fp32_onnx_bytes"], report["bytes"]
    lines = [f"int8 copy written to {report['out_dir']} (onnxruntime dynamic quantization of MatMul / Gemm weights)",
             f"{'':24s}  {'size on disk':>12s}",
             f"{'model (PyTorch, fp32)':24s}  {human_bytes(report.get('model_bytes')):>12s}",
             f"{'ONNX fp32':24s}  {human_bytes(fp32):>12s}",
             f"{'ONNX int8':24s}  {human_bytes(int8):>12s}   ({int8 / max(fp32, 1):.2f} of fp32 ONNX)"]
    if int8 >= fp32:  # dynamic quantization touches only MatMul / Gemm weights
        lines.append("note: the int8 copy is not smaller: this model's weights sit mostly in convolutions or "
                     "embeddings, which dynamic int8 quantization keeps in fp32 (try --method distill)")
    manifest_path = Path(report["out_dir"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    lines.append("accuracy: not measured by quantization (int8 outputs differ from fp32 by its rounding error); "
                 "compare predictions with --backend onnx on both exports")
    lines.append(f"predict with: {predict_hint(report['out_dir'], manifest)}")
    return "\n".join(lines)


def format_distill(summary: dict[str, Any], teacher_bytes: int, student_bytes: int) -> str:
    teacher, student = summary["teacher"], summary["student"]
    lines = [f"distilled student: run {summary['run_dir']}, model {summary['model_dir']} "
             f"(T={summary['temperature']:g}, alpha={summary['alpha']:g})",
             f"{'':8s}  {'parameters':>12s}  {'size on disk':>12s}  {'test accuracy':>13s}  {'macro-F1':>8s}"]
    for name, part, size in (("teacher", teacher, teacher_bytes), ("student", student, student_bytes)):
        lines.append(f"{name:8s}  {part['parameters']['total']:>12,}  {human_bytes(size):>12s}  "
                     f"{_accuracy(part.get('test'), 'accuracy'):>13s}  {_accuracy(part.get('test'), 'macro_f1'):>8s}")
    if "test" not in student:
        lines.append("accuracy: the data has no test split; evaluate the student with `polymodal eval`")
    lines.append(f"predict with: polymodal predict {shlex.quote(str(summary['model_dir']))} + the teacher's inputs "
                 "(--image / --audio / --text / --input)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`polymodal compress`: :func:`~polymodal.inference.compress.quantize_int8` or
    :func:`~polymodal.inference.compress.distill`, then sizes (and test accuracy for distill). ConfigError for
    options of the other method or a bad student file."""
    _check_method_options(args)
    from ..inference.compress import directory_bytes

    if args.method == "int8":
        from ..inference.compress import quantize_int8

        print(format_int8(quantize_int8(args.model, args.out, overwrite=args.overwrite)))
        return 0
    from ..inference.compress import distill
    from ..inference.predictor import resolve_model_dir

    sections = read_student(args.student, args.overrides)
    data = None
    if sections["data"]:  # --set data.limit=... refines the teacher's data section, it does not replace it
        data = {**(teacher_data_section(args.model) or {}), **sections["data"]}
    summary = distill(args.model, sections["model"], args.out, train=sections["train"] or None, data=data,
                      temperature=DEFAULT_TEMPERATURE if args.temperature is None else args.temperature,
                      alpha=DEFAULT_ALPHA if args.alpha is None else args.alpha)
    teacher_bytes = directory_bytes(resolve_model_dir(args.model))
    student_dir = Path(summary["model_dir"])
    student_bytes = directory_bytes(student_dir) if student_dir.is_dir() else None
    print(format_distill(summary, teacher_bytes, student_bytes))
    return 0
