"""The ``robustness`` section: modality ablations (every subset, Shapley contributions) and corruption curves.

Classification is measured by accuracy; alignment by the instance-level mean R@1 (the report's headline).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..options import CORRUPTIONS_BY_KIND, ReportOptions


def corruptions_for(model: Any, options: ReportOptions) -> list[tuple[str, str]]:
    """(corruption, modality) pairs to run for this model: ``options.corruptions`` (or CORRUPTIONS_BY_KIND)
    restricted to corruptions of each modality's kind."""
    from ...corruptions import get_corruption

    modalities = getattr(model.config, "modalities", {})
    pairs = []
    for name, mcfg in modalities.items():
        wanted = options.corruptions if options.corruptions is not None else CORRUPTIONS_BY_KIND.get(mcfg.kind, ())
        pairs += [(c, name) for c in wanted if get_corruption(c).kind == mcfg.kind]
    return pairs


def _raw_rows(loader: Any) -> list[dict[str, Any]] | None:
    """Manifest-style raw rows of a polymodal DataLoader (for raw-level corruptions such as audio noise)."""
    rows = getattr(getattr(loader, "dataset", None), "rows", None)
    if not rows or not hasattr(rows[0], "inputs"):
        return None
    return [{"id": r.id, **r.inputs, "label": r.label} for r in rows]


def classification_robustness(model: Any, batches: list, options: ReportOptions, loader: Any = None) -> dict[str, Any]:
    """Accuracy with every subset of modalities, each modality removed, Shapley contributions, corruption curves.

    Audio noise is added to the waveform at an SNR, so with log-mel batches it needs the loader's raw rows;
    without them it is listed under ``skipped`` with the reason.
    """
    from ...robustness import evaluate_corruptions, evaluate_modality_ablations

    ablations = evaluate_modality_ablations(model, batches, device=options.device)
    full, names = ablations["full"], ablations["modalities"]
    shapley = ablations["shapley"]
    total = sum(abs(v) for v in shapley.values())
    contribution = {
        n: {"shapley": shapley[n], "share": abs(shapley[n]) / total if total else 0.0,
            "drop_when_removed": ablations["removed"][n]["drop"], "alone": ablations["only"][n]}
        for n in names
    }
    curves, skipped = [], []
    raw = None
    for corruption, modality in corruptions_for(model, options):
        data: Any = batches
        if corruption == "audio_noise" and "input_values" not in batches[0].inputs.get(modality, {}):
            raw = raw if raw is not None else _raw_rows(loader)
            if raw is None:
                skipped.append({"corruption": corruption, "modality": modality, "reason": "no raw audio rows"})
                continue
            data = raw
        try:
            curves.append(evaluate_corruptions(model, data, corruption, options.severities, modality=modality,
                                               seed=options.seed, device=options.device))
        except ValueError as err:
            skipped.append({"corruption": corruption, "modality": modality, "reason": str(err)})
    return {
        "metric": "accuracy",
        "full": full,
        "ablations": ablations,
        "removed": ablations["removed"],
        "subsets": ablations["subsets"],
        "contribution": contribution,
        "corruptions": curves,
        "skipped": skipped,
    }


def alignment_robustness(model: Any, batches: list, options: ReportOptions) -> dict[str, Any]:
    """Instance-level mean R@1 (the report's headline) under batch-level corruptions (log-mel audio is left out:
    noise at an SNR must be added to the waveform). Copies are decided on the CLEAN inputs, so a noisy copy
    of an image still counts as a copy. ``relative_robustness``: area under the curve / (clean × severity span)."""
    from ....metrics.alignment import instance_retrieval
    from ...corruptions import apply_corruption, get_corruption
    from .alignment import collected

    clean_groups = collected(model, batches, device=options.device).groups
    curves, skipped = [], []
    for corruption, modality in corruptions_for(model, options):
        spec = get_corruption(corruption)
        values = []
        try:
            for severity in sorted({0.0, *map(float, options.severities)}):
                def transform(b, s=severity, c=spec, m=modality):
                    return b if s == 0 else apply_corruption(b, c, s, m, options.seed)

                data = collected(model, batches, transform, options.device)
                names = [m for m in model.modality_names if m in data.embeddings]
                directions, _ = instance_retrieval(data, names, ks=(1,), groups=clean_groups)
                r1 = [d["R@1"] for d in directions.values()]
                values.append(float(np.mean(r1)) if r1 else math.nan)
        except ValueError as err:
            skipped.append({"corruption": corruption, "modality": modality, "reason": str(err)})
            continue
        severities = sorted({0.0, *map(float, options.severities)})
        clean = values[0]
        span = severities[-1] - severities[0]
        area = float(np.trapezoid(values, severities)) if hasattr(np, "trapezoid") else float(np.trapz(values, severities))
        curves.append({"corruption": corruption, "kind": spec.kind, "modalities": [modality], "severities": severities,
                       "values": values, "clean": clean,
                       "relative": [v / clean if clean else math.nan for v in values],
                       "relative_robustness": area / (clean * span) if clean and span else math.nan})
    return {"metric": "instance mean R@1", "corruptions": curves, "skipped": skipped}


__all__ = ["alignment_robustness", "classification_robustness", "corruptions_for"]
