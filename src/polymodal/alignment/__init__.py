"""Old import path of the alignment names, kept so user code keeps working; polymodal itself never imports this
package. The aligner is ``polymodal.models.aligner`` (its config sections ``polymodal.config``), retrieval and
zero-shot metrics ``polymodal.metrics``, the search index ``polymodal.inference.retrieval``, and alignment is
trained as the ``alignment`` task by the one train recipe (``polymodal.recipes.train``, ``task: alignment``)."""

from ..config import AlignmentConfig, ObjectiveConfig
from ..inference.retrieval import EmbeddingIndex, chunked_topk
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
