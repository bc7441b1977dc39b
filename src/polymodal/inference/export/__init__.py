"""ONNX export of polymodal models, its onnxruntime predictor and the parity check against PyTorch.

    report = export_onnx("runs/demo/best", "exports/demo")     # classifier.onnx + manifest.json + processors.json
    OnnxPredictor("exports/demo").predict(image="seven.png")    # the same Prediction as Predictor gives

Needs the ``export`` extra (onnx, onnxruntime): ``pip install 'polymodal[export]'``.
"""

from .onnx import DEFAULT_ATOL, DEFAULT_OPSET, ExportError, export_onnx
from .runtime import OnnxModel, OnnxPredictor, read_manifest

__all__ = ["DEFAULT_ATOL", "DEFAULT_OPSET", "ExportError", "OnnxModel", "OnnxPredictor", "export_onnx",
           "read_manifest"]
