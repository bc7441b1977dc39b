"""The statistics of ``polymodal eval --compare RUN_A RUN_B``: is A's headline metric really different from B's?

Samples are matched by id, so the two runs may have been evaluated in a different order or on partly different rows
(only the shared ids count, and the report says how many were left out). Loading each side (a predictions.json, or
a run / model directory evaluated on its split) is the compare recipe, :mod:`polymodal.recipes.compare`.

Which test (stated in the result as ``test`` and ``ci_method``):

- accuracy with fewer than 25 discordant pairs (samples where exactly one system is right; ``exact.
  EXACT_DISCORDANT_BELOW``): McNemar's exact test (two-sided binomial on the discordant pairs) and the exact
  conditional interval of the difference that inverts it. 3 samples, A right on all and B wrong on all:
  p = 0.25, not significant.
- otherwise: the paired bootstrap (Koehn 2004; both systems scored on the same resampled samples), p =
  2 (1 + k) / (R + 1); the exact McNemar p is reported next to it (``mcnemar_p_value``).
- macro-F1 with fewer than 25 discordant pairs: the reported p is the larger of the bootstrap p and the exact
  McNemar p (a bootstrap over so few informative samples is unreliable; this never claims more than the exact
  test of the paired correctness would).

A degenerate bootstrap (every resample gives the same difference) is never called significant, and every
such guard adds a line to ``warnings`` that ``format_comparison`` prints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("accuracy", "macro_f1")


def align_predictions(a: dict[str, Any], b: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Match two prediction sets by sample id → (y_true, pred_a, pred_b) over the shared ids (A's order)."""
    if list(a["labels"]) != list(b["labels"]):
        raise ValueError(f"the runs predict different label sets: {a['labels']} vs {b['labels']}")
    if a.get("task", "multiclass") == "multilabel" or b.get("task", "multiclass") == "multilabel":
        raise ValueError("--compare supports single-label (multiclass / binary) predictions")
    for side in (a, b):
        if len(set(side["ids"])) != len(side["ids"]):
            dup = next(i for i in side["ids"] if side["ids"].count(i) > 1)
            raise ValueError(f"{side.get('source')}: sample id {dup!r} occurs more than once; ids must be unique")
    index_b = {str(i): k for k, i in enumerate(b["ids"])}
    rows_a = [k for k, i in enumerate(a["ids"]) if str(i) in index_b]
    if not rows_a:
        raise ValueError(f"{a.get('source')} and {b.get('source')} share no sample ids: were they evaluated on the same data?")
    rows_b = [index_b[str(a["ids"][k])] for k in rows_a]
    y_a = np.asarray(a["y_true"]).reshape(-1)[rows_a]
    y_b = np.asarray(b["y_true"]).reshape(-1)[rows_b]
    if not np.array_equal(y_a, y_b):
        bad = int(np.nonzero(y_a != y_b)[0][0])
        raise ValueError(f"sample {a['ids'][rows_a[bad]]!r} has label {y_a[bad]} in A but {y_b[bad]} in B")
    pred_a = np.asarray(a["probs"])[rows_a].argmax(axis=1)
    pred_b = np.asarray(b["probs"])[rows_b].argmax(axis=1)
    counts = {"shared": len(rows_a), "only_a": len(a["ids"]) - len(rows_a), "only_b": len(b["ids"]) - len(rows_a)}
    return y_a.astype(np.int64), pred_a, pred_b, counts


def compare_predictions(a: dict[str, Any], b: dict[str, Any], metric: str = "accuracy", n_resamples: int = 1000,
                        seed: int = 0, confidence: float = 0.95, alpha: float = 0.05) -> dict[str, Any]:
    """metric(A) − metric(B) on the shared samples: difference, CI, p-value, test used, warnings, verdict (the
    rule in the module docstring). Raises ValueError for an unknown metric or unmatched predictions."""
    from ..metrics.bootstrap import accuracy_metric, macro_f1_for, paired_bootstrap
    from ..metrics.exact import EXACT_DISCORDANT_BELOW, mcnemar_exact, paired_difference_ci

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    y, pred_a, pred_b, counts = align_predictions(a, b)
    fn = accuracy_metric if metric == "accuracy" else macro_f1_for(len(a["labels"]))
    result = paired_bootstrap(fn, y, pred_a, pred_b, n_resamples=n_resamples, confidence=confidence, seed=seed,
                              alpha=alpha)
    result.update(metric=metric, seed=seed, run_a=a.get("source"), run_b=b.get("source"), samples=counts,
                  disagreements=int((pred_a != pred_b).sum()))
    right_a, right_b = pred_a == y, pred_b == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    discordant = only_a + only_b
    result.update(discordant={"a_right_b_wrong": only_a, "a_wrong_b_right": only_b},
                  mcnemar_p_value=mcnemar_exact(only_a, only_b), bootstrap_p_value=result["p_value"],
                  test="paired_bootstrap", ci_method="percentile bootstrap")
    notes = list(result.pop("warnings"))
    small = discordant < EXACT_DISCORDANT_BELOW
    if metric == "accuracy" and small:
        low, high = paired_difference_ci(only_a, only_b, len(y), confidence)
        result.update(test="mcnemar_exact", p_value=result["mcnemar_p_value"], ci_low=low, ci_high=high,
                      ci_method="exact conditional (Clopper-Pearson on the discordant pairs)")
        notes = [f"only {discordant} discordant pairs (< {EXACT_DISCORDANT_BELOW}): McNemar's exact test and "
                 "exact interval instead of the bootstrap"] + notes
        if discordant == 0:
            notes.append("no discordant pairs: the systems are equally right on every shared sample; the zero-width "
                         "interval is not a real confidence interval")
    elif small:
        result.update(test="paired_bootstrap+mcnemar_exact",
                      p_value=max(result["bootstrap_p_value"], result["mcnemar_p_value"]))
        notes.append(f"only {discordant} discordant pairs (< {EXACT_DISCORDANT_BELOW}): p is the larger of the "
                     "bootstrap p and McNemar's exact p")
    degenerate_bootstrap = result["degenerate"] and result["test"] != "mcnemar_exact"
    result["significant"] = bool(result["p_value"] < alpha and not degenerate_bootstrap)
    result["warnings"] = notes
    if result["significant"]:
        better = "A" if result["difference"] > 0 else "B"
        result["verdict"] = (f"{better} is better: the {metric} difference is significant "
                             f"(p = {result['p_value']:.4f} < {alpha})")
    else:
        result["verdict"] = (f"no significant {metric} difference (p = {result['p_value']:.4f} >= {alpha}): "
                             "do not read the gap as a real improvement")
    return result


def format_comparison(result: dict[str, Any]) -> str:
    pct = int(round(100 * result["confidence"]))
    counts = result["samples"]
    lines = [
        f"A: {result['run_a']}",
        f"B: {result['run_b']}",
        f"{result['metric']}: A {result['metric_a']:.4f}  B {result['metric_b']:.4f}  "
        f"difference A−B {result['difference']:+.4f}  {pct}% CI [{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]",
        f"test: {result.get('test', 'paired_bootstrap')}; CI: {result.get('ci_method', 'percentile bootstrap')}; "
        f"paired bootstrap: {result['n_resamples']} resamples (seed {result['seed']}), {counts['shared']} shared samples"
        + (f" ({counts['only_a']} only in A, {counts['only_b']} only in B left out)" if counts["only_a"] or counts["only_b"] else "")
        + f", {result['disagreements']} with different predictions",
    ]
    if "discordant" in result:
        d = result["discordant"]
        lines.append(f"discordant pairs: A right / B wrong {d['a_right_b_wrong']}, A wrong / B right "
                     f"{d['a_wrong_b_right']}; McNemar exact p = {result['mcnemar_p_value']:.4f}, "
                     f"bootstrap p = {result['bootstrap_p_value']:.4f}")
    lines += [f"warning: {note}" for note in result.get("warnings") or []]
    lines.append(result["verdict"])
    return "\n".join(lines)


__all__ = ["METRICS", "align_predictions", "compare_predictions", "format_comparison"]
