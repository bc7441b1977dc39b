"""The alignment kind: retrieval per modality pair (instance level), zero-shot, the instance headline with its
bootstrap CI and the rank histogram; robustness by instance R@1; their Markdown / HTML tables.

Every instance number comes from ``polymodal.alignment.evaluate.instance_retrieval`` (the multi-positive
Recall@K of CLIP_benchmark: a query's own pair or an identical copy counts), so the table, the headline, the CI
and the run's metrics.json agree.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch

from ....jsonable import jsonable
from ..html import table as html_table
from ..kinds import REPORT_KINDS, ReportKind, SectionInput, degenerate_notes
from ..markdown import table as md_table
from ..options import ReportOptions

RANK_BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


def collected(model: Any, batches: list, transform=None, device: str = "cpu"):
    """collect_embeddings over the batches (each passed through ``transform`` first, e.g. a corruption)."""
    from ....metrics.alignment import collect_embeddings

    return collect_embeddings(model, (transform(b) if transform else b for b in batches), device=device)


def _instance_tables(directions: dict[str, Any]) -> dict[str, Any]:
    """The per-pair "Retrieval a-b" tables from instance_retrieval's directions (one source of numbers)."""
    tables: dict[str, Any] = {}
    seen = set()
    for name in directions:
        a, b = name.split("_to_")
        if (b, a) in seen:
            continue
        seen.add((a, b))
        table: dict[str, Any] = {}
        recalls = []
        for src, dst in ((a, b), (b, a)):
            for key, value in directions.get(f"{src}_to_{dst}", {}).items():
                if key != "chance":
                    table[f"{src}_to_{dst}/{key}"] = value
                    if key.startswith("R@"):
                        recalls.append(value)
        table["mean_recall"] = float(np.mean(recalls)) if recalls else None
        tables[f"{a}-{b}"] = table
    return tables


def _instance_r1_interval(ranks: dict[str, tuple[torch.Tensor, torch.Tensor]], n: int,
                          options: ReportOptions) -> dict[str, Any]:
    """Bootstrap CI of the instance headline (mean over directions of R@1) resampling SAMPLES (rows), so the
    two directions of one pair stay together; point = the headline exactly."""
    import warnings

    from ....metrics.bootstrap import vectorized
    from ....metrics.intervals import guarded_bootstrap_ci

    hits = np.full((n, len(ranks)), np.nan)
    for column, (rows, first) in enumerate(ranks.values()):
        hits[rows.numpy(), column] = (first.numpy() == 1).astype(float)

    @vectorized
    def mean_r1(h: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # a resample may miss every row of a sparse pair: NaN, dropped later
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.nanmean(h, axis=-2), axis=-1)

    return guarded_bootstrap_ci(mean_r1, (hits,), options.bootstrap, options.confidence, options.seed)


def rank_histogram(ranks: list[int]) -> dict[str, list]:
    """Counts of first-correct ranks in the bins of RANK_BINS ("1", "2", "3-5", ..., ">100")."""
    counts = []
    for low, high in RANK_BINS:
        counts.append(int(sum(1 for r in ranks if r >= low and (high is None or r <= high))))
    bins = [str(low) if low == high else (f"{low}-{high}" if high else f">{low - 1}") for low, high in RANK_BINS]
    return {"bins": bins, "counts": counts}


def alignment_quality(model: Any, batches: list, options: ReportOptions, labels: list[str] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(retrieval, retrieval_ranks): retrieval per modality pair (instance level), evaluate_alignment's full
    report (instance + class level, zero-shot), the instance headline with its bootstrap CI, and the rank
    histogram: every instance number from ``alignment.evaluate.instance_retrieval`` (own pair or an identical
    copy counts), so the table, the headline, the CI and ``metrics.json`` of the run agree."""
    from ....metrics.alignment import evaluate_alignment
    from ....metrics.retrieval import INSTANCE_DEFINITION

    data = collected(model, batches, device=options.device)
    full = evaluate_alignment(model, data, class_names=labels or None, device=options.device, keep_ranks=True)
    ranks = full.pop("instance_ranks", {})
    directions = (full.get("retrieval") or {}).get("instance") or {}
    result: dict[str, Any] = {"pairs": _instance_tables(directions), "source": "polymodal.alignment.evaluate",
                              "instance_definition": INSTANCE_DEFINITION}
    result["evaluate_alignment"] = jsonable(full)
    result["zeroshot"] = result["evaluate_alignment"].get("zeroshot")
    summary = full.get("summary") or {}
    r1s = [d["R@1"] for d in directions.values() if d["R@1"] == d["R@1"]]
    # The mean of the instance R@1 of both directions of every pair: the number the table shows.
    result["instance_mean_R@1"] = float(np.mean(r1s)) if r1s else None
    tables = result["pairs"].values()
    result["instance_mean_recall"] = float(np.mean([t["mean_recall"] for t in tables])) if tables else None
    result["mean_R@1"] = summary.get("mean_R@1", result["instance_mean_R@1"])
    for key in ("mean_R@5", "mean_R@10", "mean_zeroshot_top1", "retrieval_level"):
        if key in summary:
            result[key] = summary[key]
    all_ranks = [int(r) for _, first in ranks.values() for r in first.tolist()]
    if ranks and options.bootstrap > 0:
        interval = _instance_r1_interval(ranks, len(data.ids), options)
        result["bootstrap"] = {"n_resamples": options.bootstrap, "confidence": options.confidence,
                               "seed": options.seed, "method": "percentile (resampling samples)",
                               "intervals": {"instance_R@1": interval}}
    return result, {"histogram": rank_histogram(all_ranks), "num_queries": len(all_ranks),
                    "definition": INSTANCE_DEFINITION}


def instance_definition(retrieval: dict[str, Any]) -> str:
    """The instance-level definition the report was made with (the current one for older reports)."""
    from ....metrics.retrieval import INSTANCE_DEFINITION

    return retrieval.get("instance_definition") or INSTANCE_DEFINITION


@REPORT_KINDS.register("alignment", "embedding alignment: retrieval R@K per modality pair, zero-shot, rank histogram")
class AlignmentReport(ReportKind):
    """Dual / multi-tower aligners (no classification head)."""

    name = "alignment"
    section = "retrieval"
    headline = ("mean_R@1", "mean_R@5", "mean_R@10", "mean_zeroshot_top1", "instance_mean_R@1",
                "instance_mean_recall")


    def quality(self, data: SectionInput) -> dict[str, Any]:
        retrieval, ranks = alignment_quality(data.model, data.batches, data.options, data.labels)
        return {"retrieval": retrieval, "retrieval_ranks": ranks}

    def robustness(self, data: SectionInput) -> dict[str, Any]:
        from .robustness import alignment_robustness

        return alignment_robustness(data.model, data.batches, data.options)

    def interval_notes(self, report: dict[str, Any]) -> list[str]:
        retrieval = report.get(self.section) or {}
        conf = retrieval.get("bootstrap") or {}
        notes = []
        if conf.get("n_resamples"):
            notes.append(f"instance_R@1 CI: percentile bootstrap over samples, {conf['n_resamples']} resamples, "
                         f"seed {conf['seed']}; instance_mean_R@1 is the mean of both directions' instance R@1 "
                         f"({instance_definition(retrieval)}).")
        return notes + degenerate_notes(retrieval)

    def markdown(self, report: dict[str, Any]) -> list[str]:
        retrieval = report.get(self.section)
        if not retrieval:
            return []
        lines = []
        for pair, metrics in retrieval["pairs"].items():
            rows = [[k, v] for k, v in metrics.items()]
            lines += [f"### Retrieval {pair}", "", f"Instance level: {instance_definition(retrieval)}.", "",
                      md_table(["metric", "value"], rows), ""]
        if retrieval.get("evaluate_alignment"):
            from ....metrics.alignment import format_alignment_table

            try:
                table = format_alignment_table(retrieval["evaluate_alignment"])
            except (KeyError, TypeError, ValueError):  # null (non-finite) cells in the JSON form
                table = "(see report.json: retrieval.evaluate_alignment)"
            lines += ["### polymodal.alignment.evaluate", "", table, ""]
        if retrieval.get("evaluate_alignment_error"):
            lines += [f"evaluate_alignment failed: {retrieval['evaluate_alignment_error']}", ""]
        return lines

    def html(self, report: dict[str, Any]) -> list[str]:
        retrieval = report.get(self.section)
        if not retrieval:
            return []
        parts = []
        for pair, metrics in retrieval["pairs"].items():
            parts.append(f"<h3>Retrieval {html.escape(pair)}</h3>")
            parts.append(f"<p>Instance level: {html.escape(instance_definition(retrieval))}.</p>")
            parts.append(html_table(["metric", "value"], [[k, v] for k, v in metrics.items()]))
        return parts


__all__ = ["RANK_BINS", "AlignmentReport", "alignment_quality", "collected", "instance_definition",
           "rank_histogram"]
