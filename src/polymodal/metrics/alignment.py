"""evaluate_alignment: retrieval in both directions for every modality pair + zero-shot, as JSON-ready data.

    report = evaluate_alignment(model, test_loader, class_names=["zero", ...],
                                templates={"image": ["a handwritten {}"], "audio": ["someone says {}"]})
    report["retrieval"]["class"]["audio_to_image"]["R@1"], report["zeroshot"]["audio"]["top1"]

Definitions (stated in the report under "definitions"):
- Recall@K: the fraction of queries with ANY correct item among the top K (CLIP paper, CLIP_benchmark).
- Instance level: the correct item of query i is its own pair, row i of the other modality. Rows whose
  content is identical (the same processed input: a caption repeated for many images, the same image paired
  with two recordings) are the same instance, so an item is also correct when it is a copy of the pair or when
  its own pair is a copy of the query (CLIP_benchmark's multi-positive Recall@K). Identity is decided on the
  processed inputs (padding left out), so it does not depend on batch composition or on corruptions applied
  later; without inputs (embeddings given directly) bit-identical embeddings are the fallback. This is the
  ONE instance definition of the project: validation during training, test metrics, ``polymodal eval``'s
  tables, headline, bootstrap CI, rank histogram and robustness curves all call :func:`instance_retrieval`.
- Class level (data with labels): every item with the query's label is correct (several positives per query).
- mean / median rank: 1-based rank of the first correct item; mAP over all correct items; ties pessimistic.
- Zero-shot: class embedding = mean of the normalised prompt embeddings (templates × class name),
  prediction = the most similar class; top-1 / top-5 accuracy and mean per-class recall.
- chance: the expected value of each metric for a random ranking (random prediction), next to it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import exp, lgamma
from typing import Any

import torch
from torch import Tensor

from ..types import Batch
from .retrieval import (
    INSTANCE_DEFINITION,
    Positives,
    content_groups,
    embedding_groups,
    first_positive_ranks,
    summarize_ranks,
)
from .retrieval import instance_positives as _positives_from_groups
from .zeroshot import build_zeroshot_classifier, default_templates, zeroshot_metrics

DEFINITIONS = {
    "recall_at_k": "fraction of queries with ANY correct item among the top K (CLIP paper / CLIP_benchmark)",
    "instance": "correct item = the query's own pair or an item with identical content (e.g. an identical "
                "caption): multi-positive Recall@K of CLIP_benchmark",
    "class": "correct items = every item with the query's label (several positives per query)",
    "rank": "1-based rank of the first correct item; ties are counted against the model",
    "mAP": "mean over queries of the average precision over all correct items",
    "zeroshot": "class embedding = mean of normalised prompt embeddings; top-1/top-5 accuracy, mean per-class recall",
    "chance": "expected value of the metric under a uniformly random ranking / prediction",
}


@dataclass
class CollectedEmbeddings:
    """Per modality: embeddings [N, E] (zeros where absent) and present [N]; labels [N] or None; ids;
    groups: per modality a content group id [N] (rows with identical processed inputs share one), or None."""

    embeddings: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor | None
    ids: list[str]
    loss: float | None = None
    groups: dict[str, Tensor] | None = None


def _row_content_keys(inputs: dict[str, Any], n: int) -> list[bytes | None]:
    """A digest of each row's processed input tensors; padding (positions where a ``*mask`` key is off) is
    cut away first, so one caption padded to two batch lengths gives one key. [None] * n when the inputs hold
    no per-row tensor (the caller then falls back to identical embeddings)."""
    inputs = {key: value.detach().cpu() for key, value in inputs.items()  # one copy per tensor, not per row
              if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == n}
    if not inputs:
        return [None] * n
    # numpy has no bfloat16: hash those as float32 (exact: every bfloat16 value is a float32 value)
    inputs = {k: v.float() if v.dtype == torch.bfloat16 else v for k, v in inputs.items()}
    mask_key = next((k for k in sorted(inputs) if k.endswith("mask") and inputs[k].dim() == 2), None)
    keys = []
    for i in range(n):
        digest = hashlib.blake2b(digest_size=16)
        keep = inputs[mask_key][i].bool() if mask_key is not None else None
        for key in sorted(inputs):
            row = inputs[key][i]
            if keep is not None and row.dim() >= 1 and row.shape[-1] == keep.shape[0]:
                row = row[..., keep]
            digest.update(key.encode())
            digest.update(str(tuple(row.shape)).encode())
            digest.update(row.contiguous().numpy().tobytes())
        keys.append(digest.digest())
    return keys


@torch.no_grad()
def collect_embeddings(model: Any, batches: Iterable[Batch], device: torch.device | str | None = None,
                       with_loss: bool = False) -> CollectedEmbeddings:
    """Embed every modality of every batch (eval mode). ``with_loss``: also the sample-weighted mean loss,
    from the same forward pass (batches need ≥ 2 of the model's modalities)."""
    device = torch.device(device) if device is not None else model.logit_scale.device
    was_training = model.training
    model.eval()
    chunks: dict[str, list[Tensor]] = defaultdict(list)
    present: dict[str, list[Tensor]] = defaultdict(list)
    keys: dict[str, list[bytes | None]] = defaultdict(list)
    labels: list[Tensor] = []
    ids: list[str] = []
    loss_sum, count, has_labels = 0.0, 0, True
    try:
        for batch in batches:
            host_inputs = batch.inputs  # content keys from the loader's (CPU) tensors: no per-row device copies
            batch = batch.to(device)
            names = [m for m in model.modality_names if m in batch.inputs]
            if with_loss:
                out = model(batch)
                loss_sum += float(out.loss) * len(batch)
                embeddings = out.embeddings
            else:
                embeddings = {m: model.encode(batch, m) for m in names}
            n = len(batch)
            for m in names:
                chunks[m].append(embeddings[m].float().cpu())
                keys[m].extend(_row_content_keys(host_inputs[m], n))
                mask = batch.present.get(m)
                present[m].append(torch.ones(n, dtype=torch.bool) if mask is None else mask.cpu())
            if batch.labels is None or batch.labels.dim() != 1:
                has_labels = False
            else:
                labels.append(batch.labels.cpu())
            ids.extend(batch.ids or [str(count + i) for i in range(n)])
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_alignment: the data yielded no batches")
    return CollectedEmbeddings(
        embeddings={m: torch.cat(v) for m, v in chunks.items()},
        present={m: torch.cat(v) for m, v in present.items()},
        labels=torch.cat(labels) if has_labels and labels else None,
        ids=ids,
        loss=loss_sum / count if with_loss else None,
        groups={m: content_groups(v) for m, v in keys.items() if None not in v},
    )


# ---------------------------------------------------------------------------------------------- positives


def instance_positives(emb_a: Tensor, emb_b: Tensor, group_a: Tensor | None = None,
                       group_b: Tensor | None = None) -> Positives:
    """Instance-level positives of queries a_i over items b_j (see metrics.instance_positives): content groups
    ``group_a`` / ``group_b`` [N] when known, else bit-identical embeddings [N, E] define the copies."""
    group_a = embedding_groups(emb_a) if group_a is None else group_a
    group_b = embedding_groups(emb_b) if group_b is None else group_b
    return _positives_from_groups(group_a, group_b)


def chance_retrieval(n_items: int, positives_per_query: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Expected R@k and mean first-positive rank of a uniformly random ranking (hypergeometric)."""
    out = {}
    p = positives_per_query.double()
    p = p[p > 0]
    if p.numel() == 0 or n_items == 0:
        return {f"R@{k}": float("nan") for k in ks} | {"mean_rank": float("nan")}
    values, weights = torch.unique(p, return_counts=True)
    for k in ks:
        k_eff = min(k, n_items)
        miss = 0.0
        for value, weight in zip(values.tolist(), weights.tolist()):
            negatives = n_items - int(value)
            if negatives >= k_eff:  # P(no positive in top k) = C(N-P, k) / C(N, k)
                log = (lgamma(negatives + 1) - lgamma(negatives - k_eff + 1)
                       - lgamma(n_items + 1) + lgamma(n_items - k_eff + 1))
                miss += weight * exp(log)
        out[f"R@{k}"] = 1.0 - miss / p.numel()
    out["mean_rank"] = float(((n_items + 1) / (p + 1)).mean())
    return out


def _counts(positives: Positives, n_queries: int) -> Tensor:
    """Number of correct items per query."""
    if positives.query_labels is not None:
        item = positives.item_labels.view(1, -1)
        return torch.cat([(positives.query_labels[i : i + 4096].view(-1, 1) == item).sum(1)
                          for i in range(0, n_queries, 4096)])
    return positives.indptr[1:] - positives.indptr[:-1]


def _direction(queries: Tensor, items: Tensor, positives: Positives, ks: Sequence[int], chunk_size: int
               ) -> tuple[dict[str, Any], Tensor]:
    ranks, aps = first_positive_ranks(queries, items, positives, chunk_size=chunk_size)
    metrics: dict[str, Any] = summarize_ranks(ranks, aps, ks)
    metrics["chance"] = chance_retrieval(int(items.shape[0]), _counts(positives, int(queries.shape[0])), ks)
    return metrics, ranks


def _pairs(data: CollectedEmbeddings, names: Sequence[str], pairs: Sequence[Sequence[str]] | None
           ) -> list[tuple[str, str, Tensor]]:
    """(a, b, rows having both) for every pair with at least one such row."""
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    out = []
    for a, b in pairs:
        rows = torch.nonzero(data.present[a] & data.present[b]).view(-1)
        if rows.numel():
            out.append((a, b, rows))
    return out


def instance_retrieval(
    data: CollectedEmbeddings,
    modalities: Sequence[str] | None = None,
    pairs: Sequence[Sequence[str]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    groups: dict[str, Tensor] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[Tensor, Tensor]]]:
    """THE instance-level retrieval of the project (module docstring; ``metrics.INSTANCE_DEFINITION``).

    data: collected embeddings; ``groups`` overrides ``data.groups`` (robustness passes the clean data's groups,
    so a corrupted copy of an image is still a copy). → ({"a_to_b": {"R@k", "mean_rank", "median_rank", "mAP",
    "num_queries", "queries_without_positive", "chance"}, ...}, {"a_to_b": (rows [Q] of the queries in data
    order, first-correct ranks [Q])}).
    """
    groups = groups if groups is not None else (data.groups or {})
    names = list(modalities or data.embeddings)
    directions: dict[str, Any] = {}
    ranks: dict[str, tuple[Tensor, Tensor]] = {}
    for a, b, rows in _pairs(data, names, pairs):
        emb_a, emb_b = data.embeddings[a][rows], data.embeddings[b][rows]
        group_a = groups[a][rows] if a in groups else None
        group_b = groups[b][rows] if b in groups else None
        forward = instance_positives(emb_a, emb_b, group_a, group_b)
        for (src, dst), q, i, pos in (((a, b), emb_a, emb_b, forward), ((b, a), emb_b, emb_a, forward.transpose())):
            directions[f"{src}_to_{dst}"], first = _direction(q, i, pos, ks, chunk_size)
            ranks[f"{src}_to_{dst}"] = (rows, first)
    return directions, ranks


# ---------------------------------------------------------------------------------------------- report


def evaluate_alignment(
    model: Any,
    loader_or_batches: Iterable[Batch] | CollectedEmbeddings,
    *,
    modalities: Sequence[str] | None = None,
    pairs: Sequence[Sequence[str]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    instance: bool = True,
    by_label: bool = True,
    zeroshot: bool = True,
    class_names: Sequence[str] | None = None,
    templates: dict[str, Sequence[str]] | Sequence[str] | None = None,
    text_modality: str | None = None,
    device: torch.device | str | None = None,
    with_loss: bool = False,
    chunk_size: int = 1024,
    keep_ranks: bool = False,
) -> dict[str, Any]:
    """Retrieval (both directions of every pair) + zero-shot of an aligned model on labelled or pair data.

    → {"definitions", "num_samples", "loss" (with_loss), "retrieval": {"instance"|"class": {"a_to_b": {"R@1",
    ..., "mean_rank", "median_rank", "mAP", "num_queries", "chance": {...}}}}, "zeroshot": {modality: {"top1",
    "top5", "mean_per_class_recall", "chance": {...}, "templates"}}, "summary": {"mean_R@1", ...}}.
    Each pair is evaluated over the samples that have both modalities. Zero-shot runs for every non-text
    modality when the model has a text modality, the data has labels and ``class_names`` (label order) are
    given; ``templates``: one list for all modalities or {modality: [...]} (default: the kind's templates).
    Floats may be NaN (e.g. no labelled queries); ``recipe.jsonable`` turns them into null for JSON.
    ``keep_ranks``: also "instance_ranks" {direction: (rows [Q], first-correct ranks [Q])} (tensors, for the
    report's histogram and bootstrap; not JSON). The summary holds ``instance_mean_R@k`` (mean over the
    instance directions) next to ``mean_R@k`` (class level when labelled, else instance level).
    """
    data = loader_or_batches if isinstance(loader_or_batches, CollectedEmbeddings) else collect_embeddings(
        model, loader_or_batches, device, with_loss)
    names = list(modalities or [m for m in model.modality_names if m in data.embeddings])
    missing = [m for m in names if m not in data.embeddings]
    if missing:
        raise KeyError(f"the data has no {missing} inputs; it has {sorted(data.embeddings)}")
    report: dict[str, Any] = {"definitions": DEFINITIONS, "num_samples": len(data.ids)}
    if data.loss is not None:
        report["loss"] = data.loss
    levels: dict[str, dict[str, Any]] = {}
    if instance:
        directions, ranks = instance_retrieval(data, names, pairs, ks, chunk_size)
        if directions:
            levels["instance"] = directions
        if keep_ranks:
            report["instance_ranks"] = ranks
    if by_label and data.labels is not None:
        for a, b, rows in _pairs(data, names, pairs):
            emb_a, emb_b = data.embeddings[a][rows], data.embeddings[b][rows]
            labels = data.labels[rows]
            forward = Positives.from_labels(labels, labels)
            levels.setdefault("class", {})[f"{a}_to_{b}"] = _direction(emb_a, emb_b, forward, ks, chunk_size)[0]
            levels["class"][f"{b}_to_{a}"] = _direction(emb_b, emb_a, forward.transpose(), ks, chunk_size)[0]
    report["retrieval"] = levels
    if zeroshot and class_names is not None and data.labels is not None:
        report["zeroshot"] = _zeroshot(model, data, names, class_names, templates, text_modality)
    report["summary"] = _summary(report, ks)
    return report


def _zeroshot(model: Any, data: CollectedEmbeddings, names: list[str], class_names: Sequence[str],
              templates: dict[str, Sequence[str]] | Sequence[str] | None, text_modality: str | None) -> dict[str, Any]:
    kinds = {m: model.config.modalities[m].kind for m in model.modality_names}
    text = text_modality or next((m for m in model.modality_names if kinds[m] == "text"), None)
    if text is None:
        return {}
    num_classes = len(class_names)
    if data.labels is not None and int(data.labels.max()) >= num_classes:
        raise ValueError(f"labels go up to {int(data.labels.max())} but only {num_classes} class_names were given")
    out: dict[str, Any] = {}
    for m in names:
        if m == text or kinds[m] == "text":
            continue
        chosen = templates.get(m) if isinstance(templates, dict) else templates
        chosen = list(chosen) if chosen else default_templates(kinds[m])
        classifier = build_zeroshot_classifier(model, list(class_names), chosen, text_modality=text).cpu()
        keep = data.present[m]
        if not keep.any():
            continue
        logits = data.embeddings[m][keep] @ classifier.T
        metrics: dict[str, Any] = zeroshot_metrics(logits, data.labels[keep], num_classes)
        metrics["num_samples"] = int(keep.sum())
        metrics["chance"] = {"top1": 1 / num_classes, "top5": min(5, num_classes) / num_classes,
                             "mean_per_class_recall": 1 / num_classes}
        metrics["templates"] = chosen
        out[m] = metrics
    return out


def _summary(report: dict[str, Any], ks: Sequence[int]) -> dict[str, float]:
    """Mean R@k over every direction (class level when available, else instance level) and mean zero-shot top-1."""
    levels = report["retrieval"]
    level = "class" if "class" in levels else "instance"
    directions = levels.get(level, {})
    summary: dict[str, Any] = {"retrieval_level": level}
    for k in ks:
        values = [d[f"R@{k}"] for d in directions.values() if d[f"R@{k}"] == d[f"R@{k}"]]
        summary[f"mean_R@{k}"] = sum(values) / len(values) if values else float("nan")
    for k in ks:  # the instance level always, so every consumer reads one instance number from here
        values = [d[f"R@{k}"] for d in levels.get("instance", {}).values() if d[f"R@{k}"] == d[f"R@{k}"]]
        summary[f"instance_mean_R@{k}"] = sum(values) / len(values) if values else float("nan")
    if report.get("zeroshot"):
        tops = [m["top1"] for m in report["zeroshot"].values()]
        summary["mean_zeroshot_top1"] = sum(tops) / len(tops)
    return summary


def format_alignment_table(report: dict[str, Any], level: str | None = None, zeroshot: bool = True) -> str:
    """Markdown table: one row per retrieval direction (R@k with chance) and per zero-shot modality."""
    levels = report.get("retrieval", {})
    level = level or ("class" if "class" in levels else "instance")
    directions = levels.get(level, {})
    ks = sorted(int(key[2:]) for key in next(iter(directions.values()), {}) if key.startswith("R@"))
    header = "| task | " + " | ".join(f"R@{k} (chance)" for k in ks) + " | mean rank | mAP |"
    lines = [f"Retrieval ({level} level: {DEFINITIONS[level]}; R@K = {DEFINITIONS['recall_at_k']})", "",
             header, "|" + "---|" * (len(ks) + 3)]
    for name, m in directions.items():
        cells = [f"{m[f'R@{k}']:.3f} ({m['chance'][f'R@{k}']:.3f})" for k in ks]
        lines.append(f"| {name.replace('_to_', ' → ')} | " + " | ".join(cells)
                     + f" | {m['mean_rank']:.1f} | {m.get('mAP', float('nan')):.3f} |")
    if zeroshot and report.get("zeroshot"):
        lines += ["", "Zero-shot classification (" + DEFINITIONS["zeroshot"] + ")", "",
                  "| modality | top-1 (chance) | top-5 (chance) | mean per-class recall (chance) |", "|---|---|---|---|"]
        for m, z in report["zeroshot"].items():
            c = z["chance"]
            lines.append(f"| {m} | {z['top1']:.3f} ({c['top1']:.3f}) | {z['top5']:.3f} ({c['top5']:.3f}) | "
                         f"{z['mean_per_class_recall']:.3f} ({c['mean_per_class_recall']:.3f}) |")
    return "\n".join(lines)


__all__ = [
    "CollectedEmbeddings",
    "DEFINITIONS",
    "chance_retrieval",
    "collect_embeddings",
    "evaluate_alignment",
    "format_alignment_table",
    "instance_positives",
    "instance_retrieval",
    "INSTANCE_DEFINITION",
]
