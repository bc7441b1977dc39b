"""Cross-modal alignment: a multi-tower model trained with clip / siglip / itm / mlm, retrieval and zero-shot."""

from ..config import AlignmentConfig, ObjectiveConfig
from ..metrics.retrieval import Positives, retrieval_metrics, retrieval_report
from ..metrics.zeroshot import (
    DEFAULT_TEMPLATES,
    build_zeroshot_classifier,
    encode_texts,
    zeroshot_evaluate,
    zeroshot_logits,
    zeroshot_metrics,
    zeroshot_predict,
)
from ..models.aligner import AlignmentModel, AlignmentOutput
from .retrieval import EmbeddingIndex, chunked_topk

__all__ = [
    "AlignmentConfig",
    "AlignmentModel",
    "AlignmentOutput",
    "ObjectiveConfig",
    "EmbeddingIndex",
    "chunked_topk",
    "Positives",
    "retrieval_metrics",
    "retrieval_report",
    "DEFAULT_TEMPLATES",
    "build_zeroshot_classifier",
    "encode_texts",
    "zeroshot_evaluate",
    "zeroshot_logits",
    "zeroshot_metrics",
    "zeroshot_predict",
]
