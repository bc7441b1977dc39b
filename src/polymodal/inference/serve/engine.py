"""The model behind the server: one batch of prepared samples → one Predictor call → one result per sample.

Every forward pass goes through :class:`~polymodal.inference.Predictor` (``predict_batch`` / ``embed_batch``),
the same code as ``polymodal predict`` and the Python API, so a served prediction is the Predictor's
prediction. Text generation (op ``generate``, one :class:`~.generation.GenerationJob` per batch) goes through
:func:`~.generation.run_job`, the steps of ``GenerationPredictor.chat``. A sample that fails inside a batch (a file whose header passed the checks but whose data is
corrupt) must not fail the requests it was batched with: the batch is then re-run one sample at a time, so
each request gets its own result or its own error.
"""

from __future__ import annotations

import logging
from typing import Any

from ..predictor import Predictor

log = logging.getLogger("polymodal.serve")

OPS = ("predict", "embed", "generate")


class ModelRunner:
    """``run(op, samples)`` for :class:`~.batching.DynamicBatcher`: op ``predict`` → Prediction per sample, op
    ``embed`` → {modality: embedding [E] (torch)} per sample, holding the modalities that sample gave, op
    ``generate`` → a GenerationOutcome per job (generation models)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        # built here, on the app's thread, not lazily on the worker
        self.generator = predictor.generator if predictor.generates else None

    def run(self, op: str, samples: list[dict[str, Any]]) -> list[Any]:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
        try:
            return self._run_batch(op, samples)
        except Exception as err:
            if len(samples) == 1:
                return [err]
            log.info("a batch of %d %s requests failed (%s); running them one by one", len(samples), op, err)
        results: list[Any] = []
        for sample in samples:
            try:
                results.extend(self._run_batch(op, [sample]))
            except Exception as err:  # goes to this request only
                results.append(err)
        return results

    def _run_batch(self, op: str, samples: list[Any]) -> list[Any]:
        if op == "generate":
            from .generation_worker import run_job

            return [run_job(self.generator, job) for job in samples]
        if op == "predict":
            return self.predictor.predict_batch(samples)
        embeddings = self.predictor.embed_batch(samples)
        return [{name: embeddings[name][i] for name, raw in sample.items() if name in embeddings and raw is not None}
                for i, sample in enumerate(samples)]


__all__ = ["ModelRunner", "OPS"]
