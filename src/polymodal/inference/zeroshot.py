"""Zero-shot labels from an alignment model: the old import path of :class:`ZeroShotClassifier` and
``PredictionError``, kept for user code.

The machinery lives with the alignment task (:mod:`polymodal.tasks.zeroshot`, below ``inference/`` so that the task
that turns a model's outputs into predictions never imports upward); the CLIP zero-shot maths is in
:mod:`polymodal.metrics.zeroshot`.
"""

from __future__ import annotations

from ..tasks.predictions import PredictionError
from ..tasks.zeroshot import ZeroShotClassifier

__all__ = ["PredictionError", "ZeroShotClassifier"]
