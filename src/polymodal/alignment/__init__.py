"""Cross-modal alignment: a multi-tower model trained with clip / siglip / itm / mlm, retrieval and zero-shot."""

from .metrics import Positives, retrieval_metrics, retrieval_report
from .model import AlignmentConfig, AlignmentModel, AlignmentOutput, ObjectiveConfig
from .retrieval import EmbeddingIndex, chunked_topk
from .zeroshot import (
    DEFAULT_TEMPLATES,
    build_zeroshot_classifier,
    encode_texts,
    zeroshot_evaluate,
    zeroshot_logits,
    zeroshot_metrics,
    zeroshot_predict,
)

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
