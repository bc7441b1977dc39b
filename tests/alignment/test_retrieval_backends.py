"""Approximate retrieval backends (faiss, usearch) against exact search: agreement, save/load, errors, CLI."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from polymodal.errors import PolymodalError
from polymodal.inference.retrieval import EmbeddingIndex
from polymodal.inference.retrieval.backends import (
    BackendNotInstalledError,
    FaissBackend,
    IndexBackendError,
    IndexNotFoundError,
    RetrievalIndexError,
    make_options,
    parse_option_strings,
)

faiss = pytest.importorskip("faiss")
usearch = pytest.importorskip("usearch.index")

# Parameters that make each backend exhaustive on a small gallery: it then must return exactly the exact top-k.
# One thread: an HNSW graph built by concurrent inserts differs run to run and may, rarely, strand a node.
EXHAUSTIVE = [
    ("faiss", {"index": "ivf", "nlist": 8, "nprobe": 8}),
    ("faiss", {"index": "hnsw", "m": 16, "ef_construction": 200, "ef_search": 600, "threads": 1}),
    ("usearch", {"dtype": "f32", "connectivity": 16, "expansion_add": 200, "expansion_search": 600, "threads": 1}),
    ("usearch", {"dtype": "f16", "connectivity": 16, "expansion_add": 200, "expansion_search": 600, "threads": 1}),
]
IDS = ["faiss-ivf", "faiss-hnsw", "usearch-f32", "usearch-f16"]


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.8) -> torch.Tensor:
    """Unit vectors around ``clusters`` random centres (the shape of real embedding galleries)."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=gen), dim=-1)
    which = torch.randint(0, clusters, (n,), generator=gen)
    return F.normalize(centres[which] + spread * torch.randn(n, dim, generator=gen) / dim**0.5, dim=-1)


def recall_at_k(found: torch.Tensor, truth: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth)) / truth.numel()


@pytest.fixture(scope="module")
def data():
    gallery = clustered(600, 24, 12, seed=0)
    gen = torch.Generator().manual_seed(1)
    queries = gallery[torch.randint(0, 600, (40,), generator=gen)] + 0.05 * torch.randn(40, 24, generator=gen)
    return gallery, queries


@pytest.mark.parametrize(("backend", "options"), EXHAUSTIVE, ids=IDS)
def test_exhaustive_parameters_give_the_exact_answer(data, backend, options):
    gallery, queries = data
    exact_scores, exact_rows = EmbeddingIndex(gallery).search(queries, k=10)
    index = EmbeddingIndex(gallery, backend=backend, backend_options=options)
    scores, rows = index.search(queries, k=10)
    assert recall_at_k(rows, exact_rows) == 1.0
    assert torch.equal(rows, exact_rows)  # same items in the same order
    # scores are recomputed from the stored float32 embeddings: the exact cosines, whatever the backend stores
    torch.testing.assert_close(scores, exact_scores, atol=1e-6, rtol=0)
    # the same index answers by brute force on request
    assert torch.equal(index.search(queries, k=10, exact=True)[1], exact_rows)


@pytest.mark.parametrize(("backend", "options"), [("faiss", {}), ("faiss", {"index": "hnsw"}), ("usearch", {})],
                         ids=["faiss-ivf", "faiss-hnsw", "usearch"])
def test_default_parameters_have_high_recall_on_clustered_data(backend, options):
    gallery = clustered(4000, 32, 40, seed=2)
    gen = torch.Generator().manual_seed(3)
    queries = gallery[torch.randint(0, 4000, (200,), generator=gen)] + 0.1 * torch.randn(200, 32, generator=gen) / 32**0.5
    truth = EmbeddingIndex(gallery).search(queries, k=10)[1]
    found = EmbeddingIndex(gallery, backend=backend, backend_options=options).search(queries, k=10)[1]
    assert recall_at_k(found, truth) >= 0.95


def test_faiss_default_nlist_follows_four_sqrt_n():
    assert FaissBackend.default_nlist(1_000_000) == 4000
    assert FaissBackend.default_nlist(10_000) == 256  # 400 would train cells on fewer than 39 points
    assert FaissBackend.default_nlist(20) == 1
    index = EmbeddingIndex(clustered(2000, 8, 5, seed=4), backend="faiss").build()
    assert index.backend_options.nlist == 51  # 4·√2000 = 178.9, capped at 2000 // 39


def test_short_candidate_lists_fall_back_to_exact(data):
    # One probed cell of ~10 items cannot fill k = 50: those queries are answered exactly, never padded with -1.
    gallery, queries = data
    index = EmbeddingIndex(gallery, backend="faiss", backend_options={"nlist": 60, "nprobe": 1}).build()
    short = (index._ann.candidates(F.normalize(queries, dim=-1), 50) < 0).any(dim=1)
    assert short.sum() >= 10  # the case really happens
    scores, rows = index.search(queries, k=50)
    exact_scores, exact_rows = EmbeddingIndex(gallery).search(queries, k=50)
    assert (rows >= 0).all() and torch.isfinite(scores).all()
    assert torch.equal(rows[short], exact_rows[short])
    torch.testing.assert_close(scores[short], exact_scores[short], atol=1e-6, rtol=0)


def test_k_is_capped_and_tiny_and_raw_dot_product_indexes_work():
    items = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    for backend in ("faiss", "usearch"):
        index = EmbeddingIndex(items, normalize=False, backend=backend, backend_options={"threads": 1})
        scores, rows = index.search(torch.tensor([[1.0, 0.5]]), k=10)
        assert rows.tolist() == [[0, 2, 1]]  # raw dot products 3.0, 1.5, 0.5
        torch.testing.assert_close(scores, torch.tensor([[3.0, 1.5, 0.5]]))


@pytest.mark.parametrize(("backend", "options"), EXHAUSTIVE[::2] + [("exact", {})], ids=IDS[::2] + ["exact"])
def test_save_load_round_trip_keeps_the_backend(data, tmp_path, backend, options):
    gallery, queries = data
    index = EmbeddingIndex(gallery, ids=[f"item{i}" for i in range(600)],
                           metadata=[{"n": i} for i in range(600)], backend=backend, backend_options=options)
    before = index.search(queries, k=7)
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["backend"] == backend
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    extra = {"faiss": ["index.faiss"], "usearch": ["index.usearch"], "exact": []}[backend]
    assert files == sorted(["index.json", "index.safetensors", *extra])  # no temp files left behind
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.backend == backend and loaded.backend_options == index.backend_options
    assert loaded._ann is not None or backend == "exact"  # the saved structure is read, not rebuilt
    after = loaded.search(queries, k=7)
    assert torch.equal(after[1], before[1]) and torch.equal(after[0], before[0])
    assert loaded.search_ids(queries[:1], k=1)[0][0][0] == index.search_ids(queries[:1], k=1)[0][0][0]


def test_saved_options_include_what_the_build_resolved(data, tmp_path):
    EmbeddingIndex(data[0], backend="faiss").save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["backend_options"]["nlist"] == FaissBackend.default_nlist(600)
    assert meta["backend_options"]["nprobe"] == 16


def test_search_time_options_change_without_rebuild(data):
    gallery, queries = data
    index = EmbeddingIndex(gallery, backend="faiss", backend_options={"nlist": 30, "nprobe": 1}).build()
    structure = index._ann
    low = recall_at_k(index.search(queries, k=10)[1], EmbeddingIndex(gallery).search(queries, k=10)[1])
    index.set_search_options(nprobe="30")  # strings (from the command line) are converted
    assert index._ann is structure and index.backend_options.nprobe == 30
    assert torch.equal(index.search(queries, k=10)[1], EmbeddingIndex(gallery).search(queries, k=10)[1])
    assert low < 1.0
    with pytest.raises(IndexBackendError, match="search-time option 'nlist'.*valid: nprobe, ef_search, threads"):
        index.set_search_options(nlist=4)


def test_old_index_without_backend_loads_as_exact(data, tmp_path):
    EmbeddingIndex(data[0]).save(tmp_path / "idx")
    meta_path = tmp_path / "idx" / "index.json"
    meta = json.loads(meta_path.read_text())
    del meta["backend"], meta["backend_options"]
    meta_path.write_text(json.dumps(meta))
    assert EmbeddingIndex.load(tmp_path / "idx").backend == "exact"


# ------------------------------------------------------------------------------------------------ errors


def test_bad_backend_names_and_options_are_named():
    with pytest.raises(IndexBackendError, match="unknown retrieval backend 'fiass' \\(did you mean 'faiss'\\?\\)"):
        EmbeddingIndex(torch.eye(3), backend="fiass")
    with pytest.raises(IndexBackendError, match="unknown faiss backend option 'nprob' \\(did you mean 'nprobe'"):
        EmbeddingIndex(torch.eye(3), backend="faiss", backend_options={"nprob": 3})
    with pytest.raises(IndexBackendError, match="'nprobe' must be an integer ≥ 1, got '0'"):
        make_options("faiss", {"nprobe": "0"})
    with pytest.raises(IndexBackendError, match="'m' must be an integer ≥ 1, got 'many'"):
        make_options("faiss", {"m": "many"})
    with pytest.raises(IndexBackendError, match="index='ivfpq': choose one of ivf, hnsw"):
        make_options("faiss", {"index": "ivfpq"})
    with pytest.raises(IndexBackendError, match="dtype='i8': choose one of f32, f16, bf16"):
        make_options("usearch", {"dtype": "i8"})
    with pytest.raises(IndexBackendError, match="unknown exact backend option 'nprobe'.*valid: none"):
        make_options("exact", {"nprobe": 2})
    assert make_options("faiss", {"nlist": "auto", "index": "HNSW"}).to_dict()["index"] == "hnsw"
    assert parse_option_strings(["nprobe=32", "ef-search = 80"]) == {"nprobe": "32", "ef_search": "80"}
    with pytest.raises(IndexBackendError, match="'nprobe' must be KEY=VALUE"):
        parse_option_strings(["nprobe"])
    assert issubclass(IndexBackendError, PolymodalError) and issubclass(IndexBackendError, ValueError)


@pytest.mark.parametrize(("backend", "module", "package"), [("faiss", "faiss", "faiss-cpu"),
                                                            ("usearch", "usearch.index", "usearch")])
def test_missing_package_is_named(data, tmp_path, monkeypatch, backend, module, package):
    EmbeddingIndex(data[0], backend=backend).save(tmp_path / "idx")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(BackendNotInstalledError, match=f"'{backend}' retrieval backend needs the {package} package"
                       ".*pip install 'polymodal\\[ann\\]'"):
        EmbeddingIndex(data[0], backend=backend).search(data[1], k=3)
    # an index built elsewhere with the backend: the error names the file; exact=True still reads it
    with pytest.raises(BackendNotInstalledError, match=f"idx/index.{backend}: the '{backend}' retrieval backend"):
        EmbeddingIndex.load(tmp_path / "idx")
    exact = EmbeddingIndex.load(tmp_path / "idx", exact=True)
    assert exact.backend == "exact" and exact.search(data[1], k=3)[1].shape == (40, 3)
    assert issubclass(BackendNotInstalledError, PolymodalError)


def test_backend_file_from_another_build_or_missing_is_refused(data, tmp_path):
    EmbeddingIndex(data[0], backend="faiss").save(tmp_path / "big")
    EmbeddingIndex(data[0][:100], backend="faiss").save(tmp_path / "small")
    (tmp_path / "small" / "index.faiss").write_bytes((tmp_path / "big" / "index.faiss").read_bytes())
    with pytest.raises(IndexBackendError, match="holds 600 vectors of 24 dimensions but the index holds 100"):
        EmbeddingIndex.load(tmp_path / "small")
    (tmp_path / "big" / "index.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexBackendError, match="index.faiss is not a readable faiss index"):
        EmbeddingIndex.load(tmp_path / "big")
    (tmp_path / "big" / "index.faiss").unlink()
    with pytest.raises(IndexNotFoundError, match="index.faiss not found.*built with the faiss backend.*exact=True"):
        EmbeddingIndex.load(tmp_path / "big")
    (tmp_path / "big" / "index.json").write_text("{")
    with pytest.raises(RetrievalIndexError, match="index.json is not valid JSON"):
        EmbeddingIndex.load(tmp_path / "big")


def test_a_crash_while_writing_keeps_the_previous_backend_file(data, tmp_path, monkeypatch):
    gallery, queries = data
    EmbeddingIndex(gallery, backend="faiss").save(tmp_path / "idx")
    before = (tmp_path / "idx" / "index.faiss").read_bytes()

    def broken_write(index, path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(OSError, match="disk full"):
        EmbeddingIndex(gallery[:300], backend="faiss").save(tmp_path / "idx")
    monkeypatch.undo()
    assert (tmp_path / "idx" / "index.faiss").read_bytes() == before
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------- CLI


def _saved_gallery(root):
    """A saved (untrained) image+text model and a manifest of 6 random 8×8 images."""
    import numpy as np
    from PIL import Image

    from polymodal.config import RunConfig, from_dict
    from polymodal.models import AlignmentModel

    modalities = {"image": {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 8, "channels": 1},
                            "options": {"channels": [8, 16]}},
                  "text": {"kind": "text", "options": {"dim": 16, "depth": 1}}}
    config = from_dict(RunConfig, {"task": "alignment", "model": {"modalities": modalities, "embed_dim": 16}})
    AlignmentModel(config.model).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / f"im{i}.png")
        rows.append({"id": f"item{i}", "image": f"im{i}.png", "label": "even" if i % 2 == 0 else "odd"})
    (root / "gallery.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def test_cli_retrieve_with_backend(tmp_path, capsys):
    from polymodal.cli import main

    gallery = _saved_gallery(tmp_path)
    for backend in ("faiss", "usearch"):
        out_dir = tmp_path / f"index_{backend}"
        rc = main(["retrieve", "index", str(gallery / "model"), "--data", str(gallery / "gallery.jsonl"),
                   "--modality", "image", "--out", str(out_dir), "--backend", backend,
                   "--backend-option", "threads=1"])
        assert rc == 0 and "indexed 6 image items" in capsys.readouterr().out
        assert EmbeddingIndex.load(out_dir).backend == backend
        results = {}
        for extra in ([], ["--exact"], ["--backend-option", "threads=1"]):
            rc = main(["retrieve", "query", str(out_dir), "--image", str(gallery / "im3.png"), "--top", "6",
                       "--json", *extra])
            assert rc == 0
            results[tuple(extra)] = json.loads(capsys.readouterr().out)
        assert results[()][0]["id"] == "item3" and results[()][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert [r["id"] for r in results[()]] == [r["id"] for r in results[("--exact",)]]
    rc = main(["retrieve", "index", str(gallery / "model"), "--data", str(gallery / "gallery.jsonl"),
               "--modality", "image", "--out", str(tmp_path / "bad"), "--backend", "faiss",
               "--backend-option", "nprob=4"])
    assert rc == 2 and "did you mean 'nprobe'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before any work
    rc = main(["retrieve", "query", str(tmp_path / "index_faiss"), "--text", "x", "--backend-option", "nlist=3"])
    assert rc == 2 and "search-time option 'nlist'" in capsys.readouterr().err


def test_cli_names_a_missing_package(tmp_path, capsys, monkeypatch):
    from polymodal.cli import main

    monkeypatch.setitem(sys.modules, "faiss", None)
    rc = main(["retrieve", "index", str(tmp_path / "model"), "--data", "spoken-digits", "--modality", "image",
               "--out", str(tmp_path / "idx"), "--backend", "faiss"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs the faiss-cpu package" in err and "polymodal[ann]" in err


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_backend_files_get_the_umask_mode(data, tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        for backend in ("faiss", "usearch"):
            EmbeddingIndex(data[0][:50], backend=backend).save(tmp_path / backend)
    finally:
        os.umask(old)
    for file in ("faiss/index.faiss", "usearch/index.usearch"):
        assert stat.S_IMODE((tmp_path / file).stat().st_mode) == mode, file
