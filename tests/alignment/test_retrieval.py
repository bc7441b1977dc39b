"""Retrieval metrics vs a brute-force reference (full sort per query), chunked search, index round trip."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from polymodal.inference.retrieval import EmbeddingIndex
from polymodal.metrics.retrieval import Positives, retrieval_metrics, retrieval_report


def _brute_force(scores: np.ndarray, positive: np.ndarray, ks, ties: str):
    """Sort each row explicitly; ties ordered negatives-first (pessimistic) or positives-first (optimistic)."""
    firsts, aps = [], []
    for s, p in zip(scores, positive):
        if not p.any():
            continue
        tiebreak = p.astype(int) if ties == "pessimistic" else -p.astype(int)
        order = np.lexsort((tiebreak, -s))  # primary key: score descending; then the tie policy
        hits = p[order]
        ranks = np.flatnonzero(hits) + 1
        firsts.append(ranks[0])
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    firsts = np.array(firsts)
    out = {f"R@{k}": float(np.mean(firsts <= k)) for k in ks}
    out.update(mean_rank=float(firsts.mean()), median_rank=float(np.median(firsts)), mAP=float(np.mean(aps)))
    return out


def _check(metrics, reference):
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_metrics_match_brute_force_with_ties_and_multiple_positives(ties):
    gen = torch.Generator().manual_seed(0)
    # Coarsely quantised embeddings: many exactly equal scores (ties) between positives and negatives.
    queries = torch.randint(-2, 3, (57, 4), generator=gen).double()
    items = torch.randint(-2, 3, (40, 4), generator=gen).double()
    positive = torch.rand(57, 40, generator=gen) < 0.08
    positive[5] = False  # a query without any correct item is left out
    scores = (queries @ items.T).numpy()
    assert len(np.unique(scores)) < scores.size / 10  # the case really has ties
    ks = (1, 5, 10)
    metrics = retrieval_metrics(queries, items, Positives.from_dense(positive), ks=ks, chunk_size=7, ties=ties)
    _check(metrics, _brute_force(scores, positive.numpy(), ks, ties))
    assert metrics["queries_without_positive"] == int((~positive.any(1)).sum())
    fast = retrieval_metrics(queries, items, Positives.from_dense(positive), ks=ks, chunk_size=13, ties=ties,
                             compute_map=False)
    assert fast["mean_rank"] == metrics["mean_rank"] and fast["R@5"] == metrics["R@5"]


def test_tie_policy_on_a_constant_model():
    # Every score equal: pessimistic puts the single positive last, optimistic first.
    queries, items = torch.ones(4, 3), torch.ones(4, 3)
    worst = retrieval_metrics(queries, items, ties="pessimistic")
    best = retrieval_metrics(queries, items, ties="optimistic")
    assert worst["mean_rank"] == 4 and worst["R@1"] == 0.0 and worst["mAP"] == pytest.approx(0.25)
    assert best["mean_rank"] == 1 and best["R@1"] == 1.0 and best["mAP"] == 1.0


def test_map_matches_sklearn_without_ties():
    gen = torch.Generator().manual_seed(1)
    q, i = torch.randn(20, 8, generator=gen), torch.randn(30, 8, generator=gen)
    labels_q, labels_i = torch.randint(0, 4, (20,), generator=gen), torch.randint(0, 4, (30,), generator=gen)
    metrics = retrieval_metrics(q, i, Positives.from_labels(labels_q, labels_i), chunk_size=6)
    scores = (q @ i.T).numpy()
    relevant = (labels_q[:, None] == labels_i[None, :]).numpy()
    expected = np.mean([average_precision_score(r, s) for r, s in zip(relevant, scores) if r.any()])
    assert metrics["mAP"] == pytest.approx(expected, abs=1e-6)


def test_report_both_directions_and_position_forms_agree():
    gen = torch.Generator().manual_seed(2)
    images = F.normalize(torch.randn(12, 8, generator=gen), dim=-1)
    texts = F.normalize(images.repeat_interleave(2, 0) + 0.8 * torch.randn(24, 8, generator=gen), dim=-1)
    lists = [[2 * j, 2 * j + 1] for j in range(12)]  # two captions per image
    report = retrieval_report(images, texts, lists, names=("image", "text"), chunk_size=5)
    dense = torch.zeros(12, 24, dtype=torch.bool)
    for j, items in enumerate(lists):
        dense[j, items] = True
    scores = (images @ texts.T).double().numpy()
    _check({k.split("/")[1]: v for k, v in report.items() if k.startswith("image_to_text/") and "num" not in k
            and "without" not in k}, _brute_force(scores, dense.numpy(), (1, 5, 10), "pessimistic"))
    _check({k.split("/")[1]: v for k, v in report.items() if k.startswith("text_to_image/") and "num" not in k
            and "without" not in k}, _brute_force(scores.T, dense.T.numpy(), (1, 5, 10), "pessimistic"))
    assert report["text_to_image/num_queries"] == 24
    recalls = [v for k, v in report.items() if "/R@" in k]
    assert report["mean_recall"] == pytest.approx(sum(recalls) / len(recalls))


def test_positives_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="outside"):
        Positives.from_lists([[0], [7]], n_items=3)
    with pytest.raises(ValueError, match="pair up"):
        retrieval_metrics(torch.randn(3, 2), torch.randn(4, 2))


def test_chunked_search_equals_full_search():
    gen = torch.Generator().manual_seed(3)
    index = EmbeddingIndex(torch.randn(500, 16, generator=gen))
    queries = torch.randn(37, 16, generator=gen)
    scores, indices = index.search(queries, k=7, chunk_size=5, item_chunk_size=33)
    full = F.normalize(queries, dim=-1) @ index.embeddings.T
    ref = full.topk(7, dim=1)
    assert torch.equal(indices, ref.indices)
    assert torch.allclose(scores, ref.values, atol=1e-6)
    big_k, _ = index.search(queries[:2], k=1000)  # k is capped at the index size
    assert big_k.shape == (2, 500)


def test_search_orders_equal_scores_by_lower_index():
    index = EmbeddingIndex(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    _, indices = index.search(torch.tensor([[1.0, 0.0]]), k=3, item_chunk_size=2)
    assert indices.tolist() == [[0, 2, 3]]


def test_index_save_load_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(4)
    ids = [f"img{i}" for i in range(10)]
    meta = [{"path": f"images/{i}.png", "label": i % 3} for i in range(10)]
    index = EmbeddingIndex(torch.randn(10, 6, generator=gen), ids=ids, metadata=meta)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["index.json", "index.safetensors"]
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert torch.equal(loaded.embeddings, index.embeddings)
    assert loaded.ids == ids and loaded.metadata == meta
    q = torch.randn(3, 6, generator=gen)
    assert loaded.search_ids(q, k=2) == index.search_ids(q, k=2)
    assert loaded.row("img4") == 4


def test_index_rejects_bad_input_with_clear_messages(tmp_path):
    emb = torch.randn(3, 4)
    emb[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"row 1 \(id 'b'\)"):
        EmbeddingIndex(emb, ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="'a' appears more than once"):
        EmbeddingIndex(torch.randn(2, 4), ids=["a", "a"])
    with pytest.raises(ValueError, match=r"metadata row 1 \(id '1'\)"):
        EmbeddingIndex(torch.randn(2, 4), metadata=[{"ok": 1}, {"bad": object()}]).save(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="an embedding index directory"):
        EmbeddingIndex.load(tmp_path / "missing")
