"""Smaller, faster copies of a trained model: dynamic int8 quantization (:mod:`.int8`) and knowledge
distillation into a smaller student (:mod:`.distill`).

    report = quantize_int8("runs/demo/best", "compressed/demo-int8")   # loadable with OnnxPredictor
    summary = distill("runs/demo/best", {"fusion": {"name": "concat", "dim": 32}}, "runs/student")
"""

from .distill import DistillationModel, distill, soft_target_loss_sum, student_config
from .int8 import directory_bytes, quantize_dynamic_torch, quantize_int8

__all__ = ["DistillationModel", "directory_bytes", "distill", "quantize_dynamic_torch", "quantize_int8",
           "soft_target_loss_sum", "student_config"]
