"""Retrieval metrics with the CLIP_benchmark definition, computed in query chunks (never a full Q×N matrix).

Every retrieval number polymodal states (train-time validation, test metrics, ``eval`` tables, headline and its
CI, rank histogram, robustness curves) comes from :func:`first_positive_ranks`; instance-level positives come
from :func:`instance_positives` (``INSTANCE_DEFINITION``: the own pair or an identical copy counts).

- Recall@K: fraction of queries with ANY correct item among the top K (CLIP_benchmark ``recall_at_k``).
- mean / median rank: 1-based rank of the first correct item.
- mAP: mean over queries of average precision over all of the query's correct items.
Queries without any correct item are left out of every metric and counted in ``queries_without_positive``.

Tie policy (equal scores): ``ties="pessimistic"`` (default) ranks every negative that ties with a positive
*before* it, so a metric is never inflated by ties (e.g. a constant-score model gets the worst rank, not the
best). ``ties="optimistic"`` ranks the positives first (an upper bound). torch.topk-based evaluations, such
as CLIP_benchmark's, fall anywhere in between depending on the kernel; with continuous embeddings ties are
rare and all three agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

Ties = Literal["pessimistic", "optimistic"]


class Positives:
    """Which items are correct for each query; three compact forms that never need a dense Q×N matrix.

    - ``Positives.diagonal(n)``: query i ↔ item i (paired data, one caption per image);
    - ``Positives.from_labels(query_labels [Q], item_labels [N])``: equal labels are correct (class retrieval);
    - ``Positives.from_lists([[items of query 0], ...], n_items)``: explicit lists (e.g. 5 captions per image).
    """

    def __init__(self, n_queries: int, n_items: int, *, query_labels: Tensor | None = None,
                 item_labels: Tensor | None = None, indptr: Tensor | None = None, indices: Tensor | None = None):
        self.n_queries, self.n_items = n_queries, n_items
        self.query_labels, self.item_labels = query_labels, item_labels
        self.indptr, self.indices = indptr, indices  # CSR: items of query i are indices[indptr[i]:indptr[i+1]]

    @classmethod
    def diagonal(cls, n: int) -> Positives:
        return cls(n, n, indptr=torch.arange(n + 1), indices=torch.arange(n))

    @classmethod
    def from_labels(cls, query_labels: Sequence | Tensor, item_labels: Sequence | Tensor) -> Positives:
        q, i = torch.as_tensor(query_labels).view(-1), torch.as_tensor(item_labels).view(-1)
        return cls(len(q), len(i), query_labels=q, item_labels=i)

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]], n_items: int) -> Positives:
        counts = torch.tensor([len(items) for items in lists], dtype=torch.long)
        indices = torch.tensor([int(j) for items in lists for j in items], dtype=torch.long)
        if indices.numel() and (indices.min() < 0 or indices.max() >= n_items):
            bad = next(q for q, items in enumerate(lists) if any(not 0 <= int(j) < n_items for j in items))
            raise ValueError(f"positives of query {bad}: {list(lists[bad])} has an item index outside [0, {n_items})")
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return cls(len(lists), n_items, indptr=indptr, indices=indices)

    @classmethod
    def from_dense(cls, mask: Tensor) -> Positives:
        """A [Q, N] bool matrix (small evaluations only)."""
        mask = torch.as_tensor(mask).bool()
        return cls.from_lists([row.nonzero().view(-1).tolist() for row in mask], int(mask.shape[1]))

    def mask(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        """Dense positive mask [stop - start, n_items] for a chunk of queries."""
        if self.query_labels is not None:
            q = self.query_labels[start:stop].to(device)
            return q.view(-1, 1) == self.item_labels.to(device).view(1, -1)
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        counts = self.indptr[start + 1 : stop + 1] - self.indptr[start:stop]
        rows = torch.repeat_interleave(torch.arange(stop - start), counts)
        out = torch.zeros(stop - start, self.n_items, dtype=torch.bool, device=device)
        out[rows.to(device), self.indices[lo:hi].to(device)] = True
        return out

    def transpose(self) -> Positives:
        """The same relation seen from the items (for the other retrieval direction)."""
        if self.query_labels is not None:
            return Positives(self.n_items, self.n_queries, query_labels=self.item_labels, item_labels=self.query_labels)
        counts = self.indptr[1:] - self.indptr[:-1]
        query_of = torch.repeat_interleave(torch.arange(self.n_queries), counts)
        order = torch.sort(self.indices * self.n_queries + query_of).indices  # by item, then query
        new_counts = torch.bincount(self.indices, minlength=self.n_items)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), new_counts.cumsum(0)])
        return Positives(self.n_items, self.n_queries, indptr=indptr, indices=query_of[order])


def as_positives(positives: Positives | Sequence[Sequence[int]] | Tensor | None, n_queries: int,
                 n_items: int) -> Positives:
    """None → diagonal; a [Q, N] bool tensor → from_dense; a list of lists → from_lists."""
    if positives is None:
        if n_queries != n_items:
            raise ValueError(f"without positives, queries ({n_queries}) and items ({n_items}) must pair up 1:1")
        return Positives.diagonal(n_queries)
    if isinstance(positives, Positives):
        result = positives
    elif isinstance(positives, Tensor) and positives.dim() == 2:
        result = Positives.from_dense(positives)
    else:
        result = Positives.from_lists(positives, n_items)  # type: ignore[arg-type]
    if (result.n_queries, result.n_items) != (n_queries, n_items):
        raise ValueError(f"positives describe {result.n_queries}×{result.n_items} but the embeddings are "
                         f"{n_queries} queries × {n_items} items")
    return result


def rank_chunk(scores: Tensor, positive: Tensor, ties: Ties = "pessimistic", compute_map: bool = True
               ) -> tuple[Tensor, Tensor]:
    """scores [q, N], positive [q, N] bool → (first_rank [q] long, average_precision [q] float).

    Rows without a positive get rank 0 and AP NaN. Rank of the k-th positive (by score) = k + number of
    negatives scoring above it (or ≥ it, pessimistic ties); AP = mean_k k / rank_k.
    """
    n_pos = positive.sum(dim=1)
    has_pos = n_pos > 0
    if not compute_map:
        best = scores.masked_fill(~positive, float("-inf")).max(dim=1).values.unsqueeze(1)
        beats = scores >= best if ties == "pessimistic" else scores > best
        first = 1 + (beats & ~positive).sum(dim=1)
        ap = torch.full(scores[:, 0].shape, float("nan"), dtype=torch.float64, device=scores.device)
        return first.masked_fill(~has_pos, 0), ap
    n_items = scores.shape[1]
    negatives_sorted = scores.masked_fill(positive, float("-inf")).sort(dim=1).values  # ascending
    most = max(int(n_pos.max()), 1)
    positives_sorted = scores.masked_fill(~positive, float("-inf")).topk(most, dim=1).values  # descending [q, P]
    side = "left" if ties == "pessimistic" else "right"
    # Negatives ≥ x (left) or > x (right): those after x's insertion point. The -inf fill of positive slots
    # always sits below a real score, so it is never counted.
    above = n_items - torch.searchsorted(negatives_sorted.contiguous(), positives_sorted.contiguous(), side=side)
    k = torch.arange(1, most + 1, device=scores.device).unsqueeze(0)
    ranks = k + above
    valid = k <= n_pos.unsqueeze(1)
    ap = ((k.double() / ranks.double()) * valid).sum(dim=1) / n_pos.clamp_min(1).double()
    first = ranks[:, 0].masked_fill(~has_pos, 0)
    return first, ap.masked_fill(~has_pos, float("nan"))


def first_positive_ranks(
    queries: Tensor,
    items: Tensor,
    positives: Positives | Sequence[Sequence[int]] | Tensor | None = None,
    chunk_size: int = 1024,
    ties: Ties = "pessimistic",
    compute_map: bool = True,
) -> tuple[Tensor, Tensor]:
    """queries [Q, E] vs items [N, E] → (first-correct rank [Q] long, 0 without a positive; AP [Q] float).

    The one ranking routine behind every retrieval number (R@K = share of ranks ≤ K)."""
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    positives = as_positives(positives, int(queries.shape[0]), int(items.shape[0]))
    items = items.float()
    first_ranks, aps = [], []
    for start in range(0, int(queries.shape[0]), chunk_size):
        stop = min(start + chunk_size, int(queries.shape[0]))
        scores = queries[start:stop].float() @ items.T
        first, ap = rank_chunk(scores, positives.mask(start, stop, scores.device), ties, compute_map)
        first_ranks.append(first.cpu())
        aps.append(ap.cpu())
    ranks = torch.cat(first_ranks) if first_ranks else torch.zeros(0, dtype=torch.long)
    return ranks, (torch.cat(aps) if aps else torch.zeros(0))


def retrieval_metrics(
    queries: Tensor,
    items: Tensor,
    positives: Positives | Sequence[Sequence[int]] | Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    ties: Ties = "pessimistic",
    compute_map: bool = True,
) -> dict[str, float]:
    """One direction: queries [Q, E] retrieve items [N, E] by dot product (cosine for unit-norm embeddings).

    → {"R@k": ..., "mean_rank", "median_rank", "mAP", "num_queries", "queries_without_positive"}.
    """
    ranks, ap_all = first_positive_ranks(queries, items, positives, chunk_size, ties, compute_map)
    return summarize_ranks(ranks, ap_all, ks, compute_map)


def summarize_ranks(ranks: Tensor, ap_all: Tensor, ks: Sequence[int] = (1, 5, 10), compute_map: bool = True
                    ) -> dict[str, float]:
    """First-correct ranks [Q] (0 = no positive) and APs [Q] → the metrics dict of :func:`retrieval_metrics`."""
    evaluated = ranks > 0
    ranks_f = ranks[evaluated].double()
    out: dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = float((ranks_f <= k).double().mean()) if ranks_f.numel() else float("nan")
    out["mean_rank"] = float(ranks_f.mean()) if ranks_f.numel() else float("nan")
    out["median_rank"] = float(ranks_f.quantile(0.5)) if ranks_f.numel() else float("nan")
    if compute_map:
        out["mAP"] = float(ap_all[evaluated].double().mean()) if ranks_f.numel() else float("nan")
    out["num_queries"] = int(evaluated.sum())
    out["queries_without_positive"] = int((~evaluated).sum())
    return out


# ---------------------------------------------------------------------------------------------- instance level

INSTANCE_DEFINITION = ("instance level: a query is correct when its own pair, or an item with identical content "
                       "(an identical caption, the same image listed twice), is among the top K (multi-positive "
                       "Recall@K of CLIP_benchmark)")


def content_groups(keys: Sequence[object]) -> Tensor:
    """Group id [N] per row from hashable content keys: equal keys (identical inputs) share a group."""
    index: dict[object, int] = {}
    return torch.tensor([index.setdefault(key, len(index)) for key in keys], dtype=torch.long)


def embedding_groups(emb: Tensor) -> Tensor:
    """Group id [N] per row; rows with bit-identical embeddings share one (the fallback without inputs)."""
    if emb.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.unique(emb, dim=0, return_inverse=True)[1]


def instance_positives(group_a: Tensor, group_b: Tensor) -> Positives:
    """The instance-level positives of queries a_i over items b_j (rows i ↔ i are pairs): b_j is correct when
    b_j has the content of b_i (a copy of the pair: an identical caption) or a_j has the content of a_i (b_j is
    paired with a copy of the query). ``group_a`` / ``group_b`` [N]: content group per row (see
    :func:`content_groups`). Use ``.transpose()`` for the b → a direction (the relation is symmetric in kind)."""
    rows_a: dict[int, list[int]] = {}
    rows_b: dict[int, list[int]] = {}
    ga_list, gb_list = group_a.tolist(), group_b.tolist()
    if len(ga_list) != len(gb_list):
        raise ValueError(f"instance positives need paired rows; got {len(ga_list)} and {len(gb_list)} groups")
    for j, (ga, gb) in enumerate(zip(ga_list, gb_list)):
        rows_a.setdefault(ga, []).append(j)
        rows_b.setdefault(gb, []).append(j)
    lists = [sorted(set(rows_a[ga]) | set(rows_b[gb])) for ga, gb in zip(ga_list, gb_list)]
    return Positives.from_lists(lists, len(gb_list))


def retrieval_report(
    emb_a: Tensor,
    emb_b: Tensor,
    positives: Positives | Sequence[Sequence[int]] | Tensor | None = None,
    names: tuple[str, str] = ("a", "b"),
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    ties: Ties = "pessimistic",
) -> dict[str, float]:
    """Both directions. emb_a [Na, E], emb_b [Nb, E]; ``positives`` from a's point of view (a → b).

    Keys: "{a}_to_{b}/R@1" ... "/mean_rank", "/median_rank", "/mAP", "/num_queries", the same for b → a,
    and "mean_recall" (the average of every R@K of both directions, CLIP_benchmark's summary).
    """
    a, b = names
    forward = as_positives(positives, int(emb_a.shape[0]), int(emb_b.shape[0]))
    report: dict[str, float] = {}
    recalls = []
    for (src, dst), q, i, pos in (((a, b), emb_a, emb_b, forward), ((b, a), emb_b, emb_a, forward.transpose())):
        metrics = retrieval_metrics(q, i, pos, ks=ks, chunk_size=chunk_size, ties=ties)
        for key, value in metrics.items():
            report[f"{src}_to_{dst}/{key}"] = value
        recalls += [metrics[f"R@{k}"] for k in ks]
    report["mean_recall"] = sum(recalls) / len(recalls)
    return report
