"""EmbeddingIndex: top-k search over embeddings, exact (chunked brute force) or approximate (faiss / usearch).

    index = EmbeddingIndex(image_embeddings, ids=image_ids, metadata=[{"path": ...}, ...])
    scores, indices = index.search(text_embeddings, k=10)      # [Q, 10], [Q, 10], best first
    index.save("runs/x/index")                                  # index.safetensors + index.json (no pickle)
    index = EmbeddingIndex.load("runs/x/index")

    big = EmbeddingIndex(gallery, backend="faiss", backend_options={"nprobe": 32})   # pip install 'polymodal[ann]'
    big.save("runs/x/big")        # + index.faiss; load() restores the backend it was built with
    big.search(queries, k=10, exact=True)                       # brute force over the same index, e.g. for recall

Scores are dot products; with ``normalize=True`` (default) the stored embeddings and the queries are L2-normalised,
so scores are cosine similarities. Order of equal scores: lower item index first among the candidates kept.
Exact search memory stays O(query_chunk × item_chunk). Approximate backends (see ``backends``) propose
candidates; their scores are recomputed from the stored float32 embeddings, so only *which* items come back can
differ from exact search, never their scores or order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from ...files import atomic_save_safetensors, atomic_write_text
from .backends import (
    ANN_BACKENDS,
    AnnBackend,
    IndexBackendError,
    IndexNotFoundError,
    RetrievalIndexError,
    _Options,
    check_backend_name,
    make_options,
)

INDEX_WEIGHTS = "index.safetensors"
INDEX_META = "index.json"
FORMAT_VERSION = 1


def _merge_topk(scores: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the k best of candidate columns [q, m]: score descending, then item index ascending."""
    by_index = torch.sort(indices, dim=1, stable=True)
    scores = scores.gather(1, by_index.indices)
    indices = by_index.values
    by_score = torch.sort(scores, dim=1, descending=True, stable=True)
    return by_score.values[:, :k], indices.gather(1, by_score.indices)[:, :k]


def chunked_topk(queries: Tensor, items: Tensor, k: int, query_chunk: int = 1024, item_chunk: int = 65536
                 ) -> tuple[Tensor, Tensor]:
    """Exact top-k of queries [Q, E] @ items [N, E]ᵀ → (scores [Q, k], indices [Q, k]) without the full matrix."""
    n_items = int(items.shape[0])
    k = min(k, n_items)
    all_scores, all_indices = [], []
    for q_start in range(0, int(queries.shape[0]), query_chunk):
        q = queries[q_start : q_start + query_chunk]
        best_s = q.new_empty((q.shape[0], 0))
        best_i = torch.empty((q.shape[0], 0), dtype=torch.long, device=q.device)
        for i_start in range(0, n_items, item_chunk):
            block = q @ items[i_start : i_start + item_chunk].T  # [q, item_chunk]
            top = block.topk(min(k, block.shape[1]), dim=1)
            best_s, best_i = _merge_topk(torch.cat([best_s, top.values], 1),
                                         torch.cat([best_i, top.indices + i_start], 1), k)
        all_scores.append(best_s)
        all_indices.append(best_i)
    if not all_scores:
        return queries.new_empty((0, k)), torch.empty((0, k), dtype=torch.long)
    return torch.cat(all_scores), torch.cat(all_indices)


class EmbeddingIndex:
    """Embeddings [N, E] + optional ids (unique strings) + optional per-item JSON metadata + a search backend.

    ``backend``: ``exact`` (default), ``faiss`` or ``usearch``; ``backend_options``: that backend's options
    (``backends.FaissOptions`` / ``UsearchOptions``; strings are converted, unknown keys raise
    IndexBackendError). An approximate structure is built on the first search or save (or by ``build()``).
    Raises RetrievalIndexError for non-finite rows, duplicate ids or mismatched ids/metadata lengths, and
    BackendNotInstalledError when the backend's package is missing.
    """

    def __init__(self, embeddings: Tensor, ids: list[str] | None = None, metadata: list[dict[str, Any]] | None = None,
                 normalize: bool = True, already_normalized: bool = False, backend: str = "exact",
                 backend_options: dict[str, Any] | None = None):
        embeddings = torch.as_tensor(embeddings).detach().float()
        if embeddings.dim() != 2:
            raise RetrievalIndexError(f"embeddings must be [N, E], got shape {tuple(embeddings.shape)}")
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero()
        if bad.numel():
            row = int(bad[0])
            where = f" (id {ids[row]!r})" if ids is not None and row < len(ids) else ""
            raise RetrievalIndexError(f"embedding row {row}{where} has NaN/inf values")
        n = int(embeddings.shape[0])
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        if len(ids) != n:
            raise RetrievalIndexError(f"{len(ids)} ids for {n} embeddings")
        if len(set(ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise RetrievalIndexError(f"ids must be unique; {dup!r} appears more than once")
        if metadata is not None and len(metadata) != n:
            raise RetrievalIndexError(f"{len(metadata)} metadata rows for {n} embeddings")
        self.normalize = normalize
        # Renormalising stored unit vectors would change their last bits; load() passes already_normalized.
        self.embeddings = F.normalize(embeddings, dim=-1) if normalize and not already_normalized else embeddings
        self.embeddings = self.embeddings.contiguous()
        self.ids = ids
        self.metadata = metadata
        self._row_of = {item_id: row for row, item_id in enumerate(ids)}
        self.backend = check_backend_name(backend)
        self.backend_options: _Options = make_options(backend, backend_options)
        self._ann: AnnBackend | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def row(self, item_id: str) -> int:
        if item_id not in self._row_of:
            raise KeyError(f"id {item_id!r} is not in the index ({len(self)} items)")
        return self._row_of[item_id]

    # ---------------------------------------------------------------------------------------------- backend

    def build(self) -> EmbeddingIndex:
        """Build the approximate structure now (no-op for ``exact`` or when already built); returns self."""
        if self.backend in ANN_BACKENDS and self._ann is None:
            self._ann = ANN_BACKENDS[self.backend].build(self.embeddings, self.backend_options)
        return self

    def set_search_options(self, **options: Any) -> EmbeddingIndex:
        """Change search-time options (faiss ``nprobe`` / ``ef_search``, usearch ``expansion_search``,
        ``threads``) without rebuilding; other keys raise IndexBackendError. Returns self."""
        self.backend_options.update(self.backend, options, allowed=type(self.backend_options).SEARCH_KEYS)
        return self

    def backend_nbytes(self) -> int:
        """Memory of the approximate structure in bytes (its own copy of the vectors included); 0 for exact."""
        return self.build()._ann.nbytes() if self.backend in ANN_BACKENDS else 0  # type: ignore[union-attr]

    # ----------------------------------------------------------------------------------------------- search

    def search(self, queries: Tensor, k: int = 10, chunk_size: int = 1024, item_chunk_size: int = 65536,
               exact: bool = False) -> tuple[Tensor, Tensor]:
        """queries [Q, E] (or [E]) → (scores [Q, k], indices [Q, k]) best first; k is capped at len(self).

        ``exact=True`` searches by brute force whatever the backend (e.g. to measure an approximate backend's
        recall). With an approximate backend, a query for which it found fewer than k items is answered exactly.
        """
        queries = torch.as_tensor(queries).detach().float()
        if queries.dim() == 1:
            queries = queries.unsqueeze(0)
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {tuple(queries.shape)}")
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        if self.normalize:
            queries = F.normalize(queries, dim=-1)
        if exact or self.backend not in ANN_BACKENDS or len(self) == 0 or queries.shape[0] == 0:
            return chunked_topk(queries, self.embeddings, k, chunk_size, item_chunk_size)
        k = min(k, len(self))
        candidates = self.build()._ann.candidates(queries.contiguous(), k)  # type: ignore[union-attr]
        scores, indices = _rescore(queries, self.embeddings, candidates, k, chunk_size)
        short = (candidates < 0).any(dim=1).nonzero().flatten()
        if short.numel():  # e.g. IVF cells holding fewer than k items in all nprobe probed cells
            scores[short], indices[short] = chunked_topk(queries[short], self.embeddings, k, chunk_size,
                                                         item_chunk_size)
        return scores, indices

    def search_ids(self, queries: Tensor, k: int = 10, **kwargs: Any) -> list[list[tuple[str, float]]]:
        """Like ``search`` but → per query a list of (id, score), best first."""
        scores, indices = self.search(queries, k, **kwargs)
        return [[(self.ids[j], float(s)) for s, j in zip(srow.tolist(), irow.tolist())]
                for srow, irow in zip(scores, indices)]

    # ------------------------------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/index.safetensors`` (embeddings), the backend's file if any (``index.faiss`` /
        ``index.usearch``) and ``path/index.json`` (ids, metadata, backend + options), each atomically; the
        JSON is written last, so it never names a backend file that is not there."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.build()  # first: the build resolves options (faiss' nlist) that the JSON records
        meta = {"format_version": FORMAT_VERSION, "count": len(self), "dim": self.dim, "normalize": self.normalize,
                "backend": self.backend, "backend_options": self.backend_options.to_dict(),
                "ids": self.ids, "metadata": self.metadata}
        try:
            text = json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as err:
            row = _first_unserialisable(self.metadata or [])
            raise RetrievalIndexError(f"metadata row {row} (id {self.ids[row]!r}) is not JSON-serialisable: {err}"
                                      ) from err
        atomic_save_safetensors({"embeddings": self.embeddings.contiguous()}, directory / INDEX_WEIGHTS)
        if self._ann is not None:
            self._ann.save(directory / self._ann.file_name)
        atomic_write_text(directory / INDEX_META, text)
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike, exact: bool = False) -> EmbeddingIndex:
        """Read an index directory written by ``save``, with the backend it was built with.

        ``exact=True`` ignores the approximate structure (no package needed) and returns an exact index.
        Raises IndexNotFoundError for a missing file, RetrievalIndexError for an unreadable or inconsistent
        one, BackendNotInstalledError when the index's backend package is missing (the message names it).
        """
        directory = Path(path)
        weights, meta_path = directory / INDEX_WEIGHTS, directory / INDEX_META
        for file in (weights, meta_path):
            if not file.exists():
                raise IndexNotFoundError(f"{file} not found: is {directory} an embedding index directory?")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RetrievalIndexError(f"{meta_path} is not valid JSON ({err}); rebuild the index") from err
        if meta.get("format_version") != FORMAT_VERSION:
            raise RetrievalIndexError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        embeddings = load_file(str(weights))["embeddings"]
        if int(embeddings.shape[0]) != meta["count"]:
            raise RetrievalIndexError(f"{weights} holds {embeddings.shape[0]} rows but {meta_path} says "
                                      f"{meta['count']}")
        backend = "exact" if exact else meta.get("backend", "exact")  # indexes before backends: exact
        try:
            index = cls(embeddings, ids=meta["ids"], metadata=meta["metadata"], normalize=meta["normalize"],
                        already_normalized=True, backend=backend,
                        backend_options=meta.get("backend_options") if backend != "exact" else None)
        except IndexBackendError as err:
            raise IndexBackendError(f"{meta_path}: {err}") from err
        if backend in ANN_BACKENDS:
            kind = ANN_BACKENDS[backend]
            file = directory / kind.file_name
            if not file.exists():
                raise IndexNotFoundError(f"{file} not found: {meta_path} says the index was built with the "
                                         f"{backend} backend; rebuild it, or load it with exact=True (--exact)")
            index._ann = kind.load(file, index.backend_options, len(index), index.dim)
        return index


def _rescore(queries: Tensor, items: Tensor, candidates: Tensor, k: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Exact scores of candidate rows [Q, k] (−1: none), ordered like ``chunked_topk`` (score ↓, row ↑)."""
    scores_out, rows_out = [], []
    step = max(1, min(chunk_size, (1 << 24) // max(1, k * int(items.shape[1]))))  # gathered block ≤ 64 MiB
    for start in range(0, int(queries.shape[0]), step):
        rows = candidates[start : start + step]
        gathered = items[rows.clamp_min(0)]  # [q, k, E]
        scores = torch.bmm(gathered, queries[start : start + step].unsqueeze(2)).squeeze(2)
        scores = scores.masked_fill(rows < 0, float("-inf"))
        best_s, best_i = _merge_topk(scores, rows, k)
        scores_out.append(best_s)
        rows_out.append(best_i)
    return torch.cat(scores_out), torch.cat(rows_out)


def _first_unserialisable(rows: list[Any]) -> int:
    for i, row in enumerate(rows):
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError):
            return i
    return 0


__all__ = ["EmbeddingIndex", "chunked_topk"]
