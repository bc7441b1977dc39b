"""Dynamic int8 quantization: Linear-layer weights stored as int8, activations quantized on the fly.

``quantize_int8(model_dir, out_dir)`` writes a loadable, pickle-free directory: the model's ONNX export
(:func:`~polymodal.inference.export.export_onnx`) with every graph passed through onnxruntime's
``quantize_dynamic`` (MatMul / Gemm weights → int8, per tensor; the ONNX form of PyTorch's Linear). Load it with
:class:`~polymodal.inference.export.OnnxPredictor`. Method: Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference" (CVPR 2018), dynamic variant as in onnxruntime / PyTorch.

Why not a safetensors directory: PyTorch's dynamically quantized Linear keeps its weights as packed parameters that
safetensors cannot hold; the only way to save them is pickle, which polymodal never loads. The PyTorch version is
still available in memory (:func:`quantize_dynamic_torch`) to compare the two.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...files import make_temp_dir
from ..export.onnx import (
    MANIFEST_NAME,
    ExportError,
    export_onnx,
    prepare_out_dir,
    publish,
    require_onnx,
)

QUANTIZED_OPS = ["MatMul", "Gemm"]  # what torch.nn.Linear becomes in the exported graphs


def directory_bytes(path: str | os.PathLike) -> int:
    """Total size on disk of the files under ``path`` (bytes)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def quantize_int8(model_dir: str | os.PathLike | nn.Module, out_dir: str | os.PathLike, *,
                  overwrite: bool = False, per_channel: bool = False) -> dict[str, Any]:
    """Int8 copy of a saved model (model / run directory or a loaded model) in ``out_dir``; returns a report:
    ``{"out_dir", "method": "int8", "bytes", "fp32_onnx_bytes", "model_bytes", "graphs": {entry: {"file",
    "bytes", "fp32_bytes"}}}`` (sizes in bytes; ``model_bytes`` is the source directory, None for a model object).

    The fp32 export is checked against PyTorch first (ExportError if it does not match). Raises ExportError for
    a missing onnx / onnxruntime, an unusable ``out_dir`` (as for export_onnx) or a part that cannot export.
    """
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = make_temp_dir(out_dir.parent, prefix=f".{out_dir.name}.tmp-")
    try:
        fp32_dir, int8_dir = work / "fp32", work / "int8"
        export_onnx(model_dir, fp32_dir)
        shutil.copytree(fp32_dir, int8_dir, ignore=shutil.ignore_patterns("*.onnx"))
        manifest = json.loads((fp32_dir / MANIFEST_NAME).read_text())
        graphs = {}
        for entry, graph in manifest["graphs"].items():
            source, target = fp32_dir / graph["file"], int8_dir / graph["file"]
            try:
                with _quiet_root_warning("pre-processing before quantization"):
                    quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS,
                                     per_channel=per_channel)
            except Exception as err:
                raise ExportError(f"{entry} graph: onnxruntime cannot quantize it to int8: {type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}") from err
            graph["fp32_bytes"] = graph["bytes"]
            graph["bytes"] = target.stat().st_size
            graphs[entry] = {"file": str(out_dir / graph["file"]), "bytes": graph["bytes"],
                             "fp32_bytes": graph["fp32_bytes"]}
        manifest["precision"] = "int8"
        manifest["quantization"] = {
            "method": "dynamic int8 (onnxruntime.quantization.quantize_dynamic)", "weight_type": "int8",
            "op_types": QUANTIZED_OPS, "per_channel": per_channel,
            "note": "parity holds for the fp32 graphs; int8 outputs differ by quantization error",
        }
        (int8_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        fp32_bytes = directory_bytes(fp32_dir)
        publish(int8_dir, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    source_bytes = None if isinstance(model_dir, nn.Module) else _model_bytes(model_dir)
    return {"out_dir": str(out_dir), "method": "int8", "bytes": directory_bytes(out_dir),
            "fp32_onnx_bytes": fp32_bytes, "model_bytes": source_bytes, "graphs": graphs}


class _quiet_root_warning(logging.Filter):
    """Drops one advice line onnxruntime logs on the root logger on every call (shape pre-processing matters for
    static quantization of convolutions, not for these dynamic MatMul / Gemm weights)."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()

    def __enter__(self) -> None:
        logging.getLogger().addFilter(self)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeFilter(self)


def _model_bytes(model_dir: str | os.PathLike) -> int:
    from ..predictor import resolve_model_dir

    return directory_bytes(resolve_model_dir(model_dir))


def quantize_dynamic_torch(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8 by PyTorch
    (``torch.ao.quantization.quantize_dynamic``), for in-memory use and comparison on CPU; it cannot be saved as
    safetensors (see the module docstring). The original model is left unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensors in favour of torchao
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
