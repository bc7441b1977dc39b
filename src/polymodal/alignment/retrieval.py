"""EmbeddingIndex: exact top-k search over embeddings, chunked so memory stays O(query_chunk × item_chunk).

    index = EmbeddingIndex(image_embeddings, ids=image_ids, metadata=[{"path": ...}, ...])
    scores, indices = index.search(text_embeddings, k=10)      # [Q, 10], [Q, 10], best first
    index.save("runs/x/index")                                  # index.safetensors + index.json (no pickle)
    index = EmbeddingIndex.load("runs/x/index")

Scores are dot products; with ``normalize=True`` (default) the stored embeddings and the queries are L2-normalised,
so scores are cosine similarities. Order of equal scores: lower item index first among the candidates kept.
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

from ..model import atomic_save_safetensors, atomic_write_text

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
    """Embeddings [N, E] + optional ids (unique strings) + optional per-item JSON metadata."""

    def __init__(self, embeddings: Tensor, ids: list[str] | None = None, metadata: list[dict[str, Any]] | None = None,
                 normalize: bool = True, already_normalized: bool = False):
        embeddings = torch.as_tensor(embeddings).detach().float()
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings must be [N, E], got shape {tuple(embeddings.shape)}")
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero()
        if bad.numel():
            row = int(bad[0])
            where = f" (id {ids[row]!r})" if ids is not None and row < len(ids) else ""
            raise ValueError(f"embedding row {row}{where} has NaN/inf values")
        n = int(embeddings.shape[0])
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} embeddings")
        if len(set(ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"ids must be unique; {dup!r} appears more than once")
        if metadata is not None and len(metadata) != n:
            raise ValueError(f"{len(metadata)} metadata rows for {n} embeddings")
        self.normalize = normalize
        # Renormalising stored unit vectors would change their last bits; load() passes already_normalized.
        self.embeddings = F.normalize(embeddings, dim=-1) if normalize and not already_normalized else embeddings
        self.ids = ids
        self.metadata = metadata
        self._row_of = {item_id: row for row, item_id in enumerate(ids)}

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def row(self, item_id: str) -> int:
        if item_id not in self._row_of:
            raise KeyError(f"id {item_id!r} is not in the index ({len(self)} items)")
        return self._row_of[item_id]

    def search(self, queries: Tensor, k: int = 10, chunk_size: int = 1024, item_chunk_size: int = 65536
               ) -> tuple[Tensor, Tensor]:
        """queries [Q, E] (or [E]) → (scores [Q, k], indices [Q, k]) best first; k is capped at len(self)."""
        queries = torch.as_tensor(queries).detach().float()
        if queries.dim() == 1:
            queries = queries.unsqueeze(0)
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {tuple(queries.shape)}")
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        if self.normalize:
            queries = F.normalize(queries, dim=-1)
        return chunked_topk(queries, self.embeddings, k, chunk_size, item_chunk_size)

    def search_ids(self, queries: Tensor, k: int = 10, **kwargs: Any) -> list[list[tuple[str, float]]]:
        """Like ``search`` but → per query a list of (id, score), best first."""
        scores, indices = self.search(queries, k, **kwargs)
        return [[(self.ids[j], float(s)) for s, j in zip(srow.tolist(), irow.tolist())]
                for srow, irow in zip(scores, indices)]

    # ------------------------------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/index.safetensors`` (embeddings) + ``path/index.json`` (ids, metadata) atomically."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "count": len(self), "dim": self.dim, "normalize": self.normalize,
                "ids": self.ids, "metadata": self.metadata}
        try:
            text = json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as err:
            row = _first_unserialisable(self.metadata or [])
            raise ValueError(f"metadata row {row} (id {self.ids[row]!r}) is not JSON-serialisable: {err}") from err
        atomic_save_safetensors({"embeddings": self.embeddings.contiguous()}, directory / INDEX_WEIGHTS)
        atomic_write_text(directory / INDEX_META, text)
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingIndex:
        directory = Path(path)
        weights, meta_path = directory / INDEX_WEIGHTS, directory / INDEX_META
        for file in (weights, meta_path):
            if not file.exists():
                raise FileNotFoundError(f"{file} not found: is {directory} an embedding index directory?")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        embeddings = load_file(str(weights))["embeddings"]
        if int(embeddings.shape[0]) != meta["count"]:
            raise ValueError(f"{weights} holds {embeddings.shape[0]} rows but {meta_path} says {meta['count']}")
        return cls(embeddings, ids=meta["ids"], metadata=meta["metadata"], normalize=meta["normalize"],
                   already_normalized=True)


def _first_unserialisable(rows: list[Any]) -> int:
    for i, row in enumerate(rows):
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError):
            return i
    return 0


__all__ = ["EmbeddingIndex", "chunked_topk"]
