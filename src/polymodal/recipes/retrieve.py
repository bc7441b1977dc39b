"""The retrieve recipe (``polymodal retrieve``): embed a gallery once with an aligned model, then search it with any
other modality.

The index directory holds index.safetensors (unit-norm embeddings) + index.json (ids, per-item metadata:
id, label, source) from :class:`~polymodal.inference.retrieval.EmbeddingIndex` and retrieval.json (which model and
modality made it), so a query is embedded by the same model. Scores are cosine similarities. Items whose
embeddings are bit-identical (the same file listed twice) are stored once unless ``dedupe=False``. ``backend=
"faiss" | "usearch"`` adds an approximate nearest-neighbour structure (index.faiss / index.usearch) that queries
then use; ``query_index(..., exact=True)`` searches by brute force instead (see
:mod:`polymodal.inference.retrieval.backends` for the options and their defaults).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..inference.retrieval import RETRIEVAL_META


def _load_model(path: str | os.PathLike):
    from ..inference import resolve_model_dir
    from ..tasks import load_model
    from .evaluate import is_alignment_model_dir

    model_dir = resolve_model_dir(path)
    if not is_alignment_model_dir(model_dir):
        raise ValueError(f"{model_dir} is not an alignment model directory (its config.json task is not alignment)")
    return load_model(model_dir), model_dir


def _gallery_rows(model: Any, data: str, split: str, modality: str, limit: int | None) -> list[Any]:
    from ..data import load_builtin_rows, read_manifest
    from ..registry import DATASETS

    mcfg = {modality: model.config.modalities[modality]}
    if Path(data).is_file():
        rows = read_manifest(data, mcfg, require_label=False, limit=limit)
    elif data in DATASETS.names():
        rows = load_builtin_rows(data, split, mcfg)
        if rows is None:
            raise ValueError(f"data set {data!r} has no split {split!r}")
        rows = rows[:limit] if limit is not None else rows
    else:
        raise FileNotFoundError(f"--data {data!r} is neither a manifest file nor a built-in data set "
                                f"({', '.join(DATASETS.names())})")
    kept = [row for row in rows if row.inputs.get(modality) is not None]
    if not kept:
        raise ValueError(f"no row of {data} has a {modality!r} input")
    return kept


def _source(raw: Any) -> str | None:
    """What a human can look at for an item: the file path or the text itself (arrays are not stored)."""
    return str(raw) if isinstance(raw, (str, os.PathLike)) else None


def build_index(model_dir: str | os.PathLike, data: str, modality: str, out: str | os.PathLike, split: str = "test",
                limit: int | None = None, batch_size: int = 128, dedupe: bool = True, backend: str = "exact",
                backend_options: dict[str, Any] | None = None):
    """Embed the ``modality`` inputs of a manifest / built-in split and save an EmbeddingIndex to ``out``.

    ``backend`` / ``backend_options``: the search backend saved with the index (see
    :mod:`polymodal.inference.retrieval.backends`); a
    missing package or a bad option is reported before any embedding work.
    """
    import torch
    from torch.utils.data import DataLoader

    from ..data import MultimodalDataset
    from ..data.manifest import validate_rows
    from ..files import atomic_write_text
    from ..inference.retrieval import EmbeddingIndex
    from ..inference.retrieval.backends import make_options, require_backend

    require_backend(backend)
    make_options(backend, backend_options)
    model, resolved = _load_model(model_dir)
    if modality not in model.modality_names:
        raise KeyError(f"--modality {modality!r} is not one of the model's modalities {model.modality_names}")
    rows = _gallery_rows(model, data, split, modality, limit)
    processors = {modality: model.processors[modality]}
    rows, _ = validate_rows(rows, processors, None, "raise", require_label=False, source=str(data))
    dataset = MultimodalDataset(rows, processors)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate)
    chunks = []
    with torch.no_grad():
        for batch in loader:
            chunks.append(model.encode(batch, modality))
    embeddings = torch.cat(chunks)
    keep = list(range(len(rows)))
    if dedupe:
        groups = torch.unique(embeddings, dim=0, return_inverse=True)[1].tolist()
        first: dict[int, int] = {}
        keep = [first.setdefault(g, i) for i, g in enumerate(groups) if g not in first]
    metadata = [{"id": rows[i].id, "label": rows[i].label, "source": _source(rows[i].inputs[modality])} for i in keep]
    index = EmbeddingIndex(embeddings[keep], ids=[rows[i].id for i in keep], metadata=metadata,
                           already_normalized=True, backend=backend, backend_options=backend_options)
    directory = index.save(out)
    info = {"model_dir": str(Path(resolved).resolve()), "modality": modality, "data": str(data), "split": split,
            "rows": len(rows), "items": len(index), "backend": backend}
    atomic_write_text(directory / RETRIEVAL_META, json.dumps(info, indent=2))
    return index, info


def embed_query(model: Any, raw: Any, modality: str):
    """One raw input (file path or string) → its unit-norm embedding [1, E] through ``modality``'s tower."""
    import torch

    processor = model.processors[modality]
    inputs = processor.collate([processor(raw)])
    present = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        return model.embed(modality, model.encode_modality(modality, inputs, present))


def _query_modality(model: Any, kind: str, requested: str | None) -> str:
    if requested is not None:
        if requested not in model.modality_names:
            raise KeyError(f"--query-modality {requested!r} is not one of the model's modalities {model.modality_names}")
        return requested
    matches = [m for m in model.modality_names if model.config.modalities[m].kind == kind]
    if not matches:
        raise ValueError(f"the model has no {kind} modality (it has {model.modality_names}); cannot embed a {kind} query")
    if len(matches) > 1:
        raise ValueError(f"the model has several {kind} modalities {matches}: pick one with --query-modality")
    return matches[0]


def query_index(index_dir: str | os.PathLike, raw: Any, kind: str, top: int = 5, model: Any = None,
                query_modality: str | None = None, exact: bool = False,
                search_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Search an index with one raw query of ``kind`` (text / image / audio) → [{rank, score, id, label, source}].

    The index is searched with the backend it was built with (``exact=True``: brute force); ``search_options``
    sets that backend's search-time parameters (e.g. {"nprobe": 64}).
    """
    from ..inference.retrieval import EmbeddingIndex

    index_dir = Path(index_dir)
    index = EmbeddingIndex.load(index_dir, exact=exact)
    if search_options:
        index.set_search_options(**search_options)
    meta_path = index_dir / RETRIEVAL_META
    info = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if model is None:
        if "model_dir" not in info:
            raise FileNotFoundError(f"{meta_path} is missing: pass the model directory with --model")
        model, _ = _load_model(info["model_dir"])
    elif isinstance(model, (str, os.PathLike)):
        model, _ = _load_model(model)
    modality = _query_modality(model, kind, query_modality)
    query = embed_query(model, raw, modality)
    if query.shape[1] != index.dim:
        raise ValueError(f"the model embeds into {query.shape[1]} dimensions but the index holds {index.dim}: "
                         "was it built with another model?")
    scores, indices = index.search(query, k=top)
    results = []
    for rank, (score, row) in enumerate(zip(scores[0].tolist(), indices[0].tolist()), start=1):
        meta = (index.metadata or [{}] * len(index))[row] or {}
        results.append({"rank": rank, "score": score, "id": index.ids[row], "label": meta.get("label"),
                        "source": meta.get("source")})
    return results


__all__ = ["RETRIEVAL_META", "build_index", "embed_query", "query_index"]
