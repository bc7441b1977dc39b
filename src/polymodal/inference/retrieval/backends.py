"""Search backends behind :class:`~polymodal.inference.retrieval.index.EmbeddingIndex`.

- ``exact``: brute force in torch (``chunked_topk``): every item is scored; always correct, O(N) per query.
- ``faiss``: approximate nearest neighbours from faiss-cpu (Johnson, Douze, Jégou, "Billion-scale similarity
  search with GPUs", 2017; https://github.com/facebookresearch/faiss). Two structures:
  ``index=ivf`` (default) is IVF-Flat: k-means splits the gallery into ``nlist`` cells, a query scans the
  ``nprobe`` cells whose centroids are nearest, with exact inner products inside them;
  ``index=hnsw`` is a hierarchical navigable small-world graph (Malkov & Yashunin, "Efficient and robust
  approximate nearest neighbor search using Hierarchical Navigable Small World graphs", 2016/2018).
- ``usearch``: HNSW from usearch (https://github.com/unum-cloud/usearch), optionally storing the vectors as
  f16 (half the memory; the returned scores are recomputed exactly, see below).

The approximate backends are optional: ``pip install 'polymodal[ann]'`` (faiss-cpu, usearch). Asking for one
that is not installed raises :class:`BackendNotInstalledError` naming the package to install.

A backend only proposes candidate rows [Q, k]; ``EmbeddingIndex`` recomputes each candidate's score from its
own float32 embeddings and orders them like the exact backend (score descending, then row ascending), so the
scores an approximate search returns are the exact cosine similarities of the items it found, and the only
difference from exact search is which items are found (measured as Recall@k, benchmarks/retrieval_scale.py).

Files: each backend writes one file next to ``index.safetensors`` with the library's own binary format
(``faiss.write_index`` / ``usearch.Index.save``), written to a temp file and renamed (atomic), and read back
with ``faiss.read_index`` / ``usearch.Index.restore``: nothing is unpickled.

Parameters (all exposed as options; defaults chosen with benchmarks/retrieval_scale.py, see its results):
recall grows and speed falls with ``nprobe`` (IVF), ``ef_search`` (faiss HNSW) and ``expansion_search``
(usearch); those three are search-time options that can be changed on a loaded index without rebuilding it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ...errors import PolymodalError
from ...files import apply_plain_modes, create_temp_file

BACKEND_NAMES = ("exact", "faiss", "usearch")
PIP_HINT = "pip install 'polymodal[ann]'"


class RetrievalIndexError(PolymodalError, ValueError):
    """An embedding index that cannot be built or read as asked (bad rows, ids, files); the message says why."""


class IndexNotFoundError(PolymodalError, FileNotFoundError):
    """A file of an index directory is missing."""


class IndexBackendError(RetrievalIndexError):
    """A bad backend name or option, or a backend file that does not match its index."""


class BackendNotInstalledError(PolymodalError, ImportError):
    """The optional package an approximate backend needs is not installed."""


def _require(module: str, package: str, backend: str, context: str = "") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BackendNotInstalledError(
            f"{context}the {backend!r} retrieval backend needs the {package} package, which is not installed "
            f"({err}): {PIP_HINT} (or pip install {package}), or use --backend exact") from err


def _threads(requested: int | None) -> int:
    """Default to torch's intra-op thread count, so the process-wide thread policy also covers the backend."""
    return int(requested) if requested is not None else max(1, torch.get_num_threads())


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` then fsync + rename: a crash never leaves a half-written backend file. The file gets
    the mode a plain ``open`` gives (0666 minus the umask), whatever mode the library's writer used."""
    fd, tmp = create_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        apply_plain_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------ options


@dataclass
class _Options:
    """Base of the per-backend option dataclasses: typed parsing, validation, 'did you mean' on bad keys."""

    SEARCH_KEYS: ClassVar[tuple[str, ...]] = ()
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, backend: str, values: dict[str, Any] | None, allowed: Iterable[str] | None = None
                  ) -> _Options:
        options = cls()
        options.update(backend, values or {}, allowed)
        return options

    def update(self, backend: str, values: dict[str, Any], allowed: Iterable[str] | None = None) -> None:
        keys = list(allowed) if allowed is not None else self.keys()
        hints = typing.get_type_hints(type(self))
        for key, raw in values.items():
            if key not in keys:
                close = difflib.get_close_matches(str(key), keys, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                what = "search-time option" if allowed is not None else "option"
                raise IndexBackendError(f"unknown {backend} backend {what} {key!r}{hint}; "
                                        f"valid: {', '.join(keys) or 'none'}")
            setattr(self, key, self._convert(backend, key, raw, hints[key]))

    def _convert(self, backend: str, key: str, raw: Any, hint: Any) -> Any:
        is_optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "auto") and is_optional):
            if not is_optional:
                raise IndexBackendError(f"{backend} backend option {key!r} cannot be None")
            return None
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        if base is int:
            try:
                value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
            except (TypeError, ValueError):
                value = None
            if value is None or isinstance(raw, bool) or value < 1:
                raise IndexBackendError(f"{backend} backend option {key!r} must be an integer ≥ 1, got {raw!r}")
            return value
        value = str(raw).lower()
        choices = self.CHOICES.get(key)
        if choices and value not in choices:
            raise IndexBackendError(f"{backend} backend option {key}={raw!r}: choose one of {', '.join(choices)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ExactOptions(_Options):
    """The exact backend has no options."""


@dataclass
class FaissOptions(_Options):
    """faiss-cpu index parameters. ``index``: ``ivf`` (IVF-Flat, default) or ``hnsw`` (HNSW-Flat).

    IVF: ``nlist`` cells (None → round(4·√N), the low end of faiss' guideline 4·√N … 16·√N, capped so every
    cell trains on ≥ 39 points); ``nprobe`` cells scanned per query (search-time); k-means trains on
    ``train_points_per_list × nlist`` sampled points for ``train_iterations`` rounds (faiss' defaults, 256 and
    25, make a 1M build several times longer for no recall we could measure).
    HNSW: ``m`` links per node, ``ef_construction`` build beam (80: on clustered galleries 40 cost 5 points of
    Recall@10 at equal search speed, for about the same build time), ``ef_search`` search beam (search-time,
    raised to k when smaller). ``threads``: None → torch's count.

    IVF is the default: batched, it scans its cells as small matrix products, and in development runs of
    benchmarks/retrieval_scale.py (200k clustered items) it answered batches of 256 about twice as fast as
    HNSW at equal Recall@10, with a shorter build.
    """

    index: str = "ivf"
    nlist: int | None = None
    nprobe: int = 16
    train_points_per_list: int = 64
    train_iterations: int = 10
    m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    threads: int | None = None

    SEARCH_KEYS: ClassVar[tuple[str, ...]] = ("nprobe", "ef_search", "threads")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"index": ("ivf", "hnsw")}


@dataclass
class UsearchOptions(_Options):
    """usearch HNSW parameters: ``connectivity`` links per node (32: on clustered galleries 16 cost 4 points
    of Recall@10 at equal speed), ``expansion_add`` build beam, ``expansion_search`` search beam (search-time,
    raised to k when smaller), ``dtype`` of the vectors usearch keeps (``f16``, default: half the memory of
    ``f32`` at the same recall in our runs, and the returned scores are exact anyway; ``f32``; ``bf16``; ``i8``
    is not offered: on unit vectors it lost a quarter of the true neighbours). ``threads``: None → torch's count.
    """

    connectivity: int = 32
    expansion_add: int = 64
    expansion_search: int = 64
    dtype: str = "f16"
    threads: int | None = None

    SEARCH_KEYS: ClassVar[tuple[str, ...]] = ("expansion_search", "threads")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"dtype": ("f32", "f16", "bf16")}


# ----------------------------------------------------------------------------------------------- backends


class AnnBackend:
    """An approximate structure over the rows of an embeddings matrix [N, E]; proposes candidate rows."""

    name: ClassVar[str]
    file_name: ClassVar[str]
    options_class: ClassVar[type[_Options]]

    def __init__(self, index: Any, options: _Options, count: int, dim: int):
        self.index, self.options, self.count, self.dim = index, options, count, dim

    @classmethod
    def module(cls, context: str = "") -> Any:
        raise NotImplementedError

    @classmethod
    def build(cls, embeddings: Tensor, options: _Options) -> AnnBackend:
        """embeddings [N, E] float32 → the structure; resolved parameters (e.g. ``nlist``) go into ``options``."""
        raise NotImplementedError

    def candidates(self, queries: Tensor, k: int) -> Tensor:
        """queries [Q, E] float32 → candidate rows [Q, k] (int64), -1 where the search found fewer than k."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, options: _Options, count: int, dim: int) -> AnnBackend:
        raise NotImplementedError

    def nbytes(self) -> int:
        """Size of the structure in memory (its vectors included), in bytes."""
        raise NotImplementedError

    def _check(self, path: Path, count: int, dim: int) -> None:
        if (self.count, self.dim) != (count, dim):
            raise IndexBackendError(f"{path} holds {self.count} vectors of {self.dim} dimensions but the index "
                                    f"holds {count} of {dim}: the files come from different builds; rebuild it")


def _numpy(tensor: Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to(torch.float32).cpu().numpy())


class FaissBackend(AnnBackend):
    name = "faiss"
    file_name = "index.faiss"
    options_class = FaissOptions

    @classmethod
    def module(cls, context: str = "") -> Any:
        return _require("faiss", "faiss-cpu", cls.name, context)

    @staticmethod
    def default_nlist(count: int) -> int:
        # 4·√N (faiss wiki "Guidelines to choose an index"), but at least 39 training points per cell.
        return max(1, min(round(4 * math.sqrt(count)), count // 39))

    @classmethod
    def build(cls, embeddings: Tensor, options: _Options) -> FaissBackend:
        faiss = cls.module()
        assert isinstance(options, FaissOptions)
        count, dim = (int(s) for s in embeddings.shape)
        faiss.omp_set_num_threads(_threads(options.threads))
        data = _numpy(embeddings)
        if options.index == "hnsw":
            index = faiss.IndexHNSWFlat(dim, options.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = options.ef_construction
        else:
            options.nlist = min(options.nlist or cls.default_nlist(count), count)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, options.nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = options.train_points_per_list
            index.cp.niter = options.train_iterations
            index.cp.min_points_per_centroid = 1  # a tiny gallery gets fewer points per cell, without a warning
            index.train(data)
        index.add(data)
        return cls(index, options, count, dim)

    def _apply_search_options(self, k: int) -> None:
        options = self.options
        assert isinstance(options, FaissOptions)
        self.module().omp_set_num_threads(_threads(options.threads))
        if options.index == "hnsw":
            self.index.hnsw.efSearch = max(options.ef_search, k)
        else:
            self.index.nprobe = min(options.nprobe, int(self.index.nlist))

    def candidates(self, queries: Tensor, k: int) -> Tensor:
        self._apply_search_options(k)
        _, rows = self.index.search(_numpy(queries), k)
        return torch.from_numpy(rows).long()

    def save(self, path: Path) -> None:
        _atomic_write(path, lambda tmp: self.module().write_index(self.index, tmp))

    @classmethod
    def load(cls, path: Path, options: _Options, count: int, dim: int) -> FaissBackend:
        faiss = cls.module(f"{path}: ")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise IndexBackendError(f"{path} is not a readable faiss index ({err}); rebuild the index") from err
        backend = cls(index, options, int(index.ntotal), int(index.d))
        backend._check(path, count, dim)
        return backend

    def nbytes(self) -> int:
        # Counted from the structure: serialising a 1M-item index just to measure it would copy gigabytes.
        vectors = self.count * self.dim * 4
        if isinstance(self.options, FaissOptions) and self.options.index == "hnsw":
            hnsw = self.index.hnsw
            return vectors + 4 * int(hnsw.neighbors.size()) + 4 * int(hnsw.levels.size()) + 8 * int(hnsw.offsets.size())
        return vectors + 8 * self.count + 4 * self.dim * int(self.index.nlist)  # + ids + centroids


class UsearchBackend(AnnBackend):
    name = "usearch"
    file_name = "index.usearch"
    options_class = UsearchOptions

    @classmethod
    def module(cls, context: str = "") -> Any:
        return _require("usearch.index", "usearch", cls.name, context)

    @classmethod
    def build(cls, embeddings: Tensor, options: _Options) -> UsearchBackend:
        usearch = cls.module()
        assert isinstance(options, UsearchOptions)
        count, dim = (int(s) for s in embeddings.shape)
        index = usearch.Index(ndim=dim, metric="ip", dtype=options.dtype, connectivity=options.connectivity,
                              expansion_add=options.expansion_add, expansion_search=options.expansion_search)
        if count:
            index.add(np.arange(count, dtype=np.uint64), _numpy(embeddings), threads=_threads(options.threads))
        return cls(index, options, count, dim)

    def candidates(self, queries: Tensor, k: int) -> Tensor:
        options = self.options
        assert isinstance(options, UsearchOptions)
        self.index.expansion_search = max(options.expansion_search, k)
        matches = self.index.search(_numpy(queries), k, threads=_threads(options.threads))
        # One query gives Matches (keys [found]); several give BatchMatches (keys [Q, k] padded, counts [Q]).
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        counts = np.asarray(getattr(matches, "counts", [keys.shape[1]]), dtype=np.int64).reshape(-1)
        rows = torch.full((len(queries), k), -1, dtype=torch.long)
        rows[:, : keys.shape[1]] = torch.from_numpy(keys[:, :k].copy())
        rows[torch.arange(k)[None, :] >= torch.from_numpy(counts)[:, None]] = -1
        return rows

    def save(self, path: Path) -> None:
        _atomic_write(path, lambda tmp: self.index.save(tmp))

    @classmethod
    def load(cls, path: Path, options: _Options, count: int, dim: int) -> UsearchBackend:
        usearch = cls.module(f"{path}: ")
        try:
            index = usearch.Index.restore(str(path))
        except (RuntimeError, ValueError) as err:
            raise IndexBackendError(f"{path} is not a readable usearch index ({err}); rebuild the index") from err
        if index is None:
            raise IndexBackendError(f"{path} is not a readable usearch index; rebuild the index")
        backend = cls(index, options, int(index.size), int(index.ndim))
        backend._check(path, count, dim)
        return backend

    def nbytes(self) -> int:
        return int(self.index.memory_usage)


ANN_BACKENDS: dict[str, type[AnnBackend]] = {"faiss": FaissBackend, "usearch": UsearchBackend}
OPTIONS: dict[str, type[_Options]] = {"exact": ExactOptions, "faiss": FaissOptions, "usearch": UsearchOptions}


def check_backend_name(name: str) -> str:
    if name not in BACKEND_NAMES:
        close = difflib.get_close_matches(str(name), BACKEND_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise IndexBackendError(f"unknown retrieval backend {name!r}{hint}; choose one of {', '.join(BACKEND_NAMES)}")
    return name


def make_options(backend: str, values: dict[str, Any] | None = None) -> _Options:
    """Validated options of ``backend`` from a dict (values may be strings, as from the command line)."""
    return OPTIONS[check_backend_name(backend)].from_dict(backend, values)


def parse_option_strings(pairs: Iterable[str] | None) -> dict[str, str]:
    """``["nprobe=32", "index=hnsw"]`` (``--backend-option`` values) → {"nprobe": "32", "index": "hnsw"}."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise IndexBackendError(f"backend option {pair!r} must be KEY=VALUE (e.g. nprobe=32)")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def require_backend(name: str) -> None:
    """Raise :class:`BackendNotInstalledError` now (before any slow work) if ``name`` needs a missing package."""
    if check_backend_name(name) in ANN_BACKENDS:
        ANN_BACKENDS[name].module()


__all__ = [
    "ANN_BACKENDS", "BACKEND_NAMES", "AnnBackend", "BackendNotInstalledError", "ExactOptions", "FaissBackend",
    "FaissOptions", "IndexBackendError", "IndexNotFoundError", "RetrievalIndexError", "UsearchBackend", "UsearchOptions", "check_backend_name", "make_options",
    "parse_option_strings", "require_backend",
]
