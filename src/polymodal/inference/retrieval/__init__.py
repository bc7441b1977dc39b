"""Cross-modal search: :class:`EmbeddingIndex` (:mod:`.index`: exact chunked top-k, saved as safetensors + JSON)
and its optional approximate backends (:mod:`.backends`: faiss, usearch). Building an index from a model and a
data set, and querying it, is the retrieve recipe (:mod:`polymodal.recipes.retrieve`, ``polymodal retrieve``)."""

from .backends import BackendNotInstalledError, IndexBackendError, IndexNotFoundError, RetrievalIndexError
from .index import EmbeddingIndex, chunked_topk

# What `polymodal retrieve index` writes next to the index: which model and modality embedded it (read by the
# query recipe and by `polymodal serve --index`, so that queries are embedded by the same model).
RETRIEVAL_META = "retrieval.json"

__all__ = ["RETRIEVAL_META", "BackendNotInstalledError", "EmbeddingIndex", "IndexBackendError", "IndexNotFoundError",
           "RetrievalIndexError", "chunked_topk"]
