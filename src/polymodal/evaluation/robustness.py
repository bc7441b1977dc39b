"""Robustness: modality ablations (missing modalities, Shapley contributions) and corruption curves.

Works for any ``nn.Module`` taking a polymodal Batch and returning logits (or a ModelOutput with ``.logits``);
``model.task`` (default "multiclass") says how logits become probabilities. A metric is
``metric(y_true, probs) -> float``; the default is accuracy (argmax; label-wise accuracy for multilabel).

Removing a modality follows the Batch contract: ``present[name]`` is set False for every sample and its
tensors are replaced by placeholders (the processor's ``empty()`` tensors where the model has processors and
shapes match, zeros otherwise), so a model cannot peek at an "absent" input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..types import Batch
from .corruptions import apply_corruption, corrupt_rows, get_corruption

Metric = Callable[[np.ndarray, np.ndarray], float]
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

# ---------------------------------------------------------------------------------------------- predictions


def model_task(model: nn.Module) -> str:
    return str(getattr(model, "task", "multiclass"))


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Top-1 accuracy for class indices y_true [N] and probs [N, C]; label-wise accuracy at 0.5 for multi-hot y_true [N, C]."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    if y_true.ndim == 2 and y_true.shape == probs.shape and probs.shape[1] > 1:
        return float(((probs >= 0.5) == (y_true >= 0.5)).mean())
    return float((probs.argmax(axis=1) == y_true.reshape(-1)).mean())


def _probabilities(logits: Tensor, task: str) -> Tensor:
    from ..heads.classification import probabilities

    return probabilities(logits.float(), task)


def _targets(labels: Tensor, task: str) -> np.ndarray:
    """Batch labels → y_true: class indices [B] (multiclass / binary) or multi-hot [B, C] (multilabel)."""
    if task == "multilabel":
        return labels.float().cpu().numpy()
    return labels.reshape(-1).long().cpu().numpy()


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    transform: Callable[[Batch], Batch] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Run ``model`` over batches (optionally transformed first) → (y_true, probs [N, C], ids)."""
    model.eval()
    task = model_task(model)
    ys, ps, ids = [], [], []
    for batch in batches:
        if batch.labels is None:
            raise ValueError("robustness evaluation needs labelled batches (Batch.labels is None)")
        if transform is not None:
            batch = transform(batch)
        out = model(batch.to(device))
        logits = out.logits if hasattr(out, "logits") else out
        ps.append(_probabilities(logits, task).cpu().numpy())
        ys.append(_targets(batch.labels, task))
        ids.extend(batch.ids)
    if not ps:
        raise ValueError("no batches to evaluate")
    return np.concatenate(ys), np.concatenate(ps), ids


# ---------------------------------------------------------------------------------------------- ablations


def _placeholder(model: nn.Module, modality: str, key: str, like: Tensor) -> Tensor:
    processors = getattr(model, "_processors", None) or {}
    processor = processors.get(modality)
    if processor is not None and hasattr(processor, "empty"):
        empty = processor.empty().get(key)
        if empty is not None and tuple(empty.shape) == tuple(like.shape[1:]):
            return empty.to(like.dtype).unsqueeze(0).expand_as(like).clone()
    return torch.zeros_like(like)


def remove_modalities(batch: Batch, removed: Iterable[str], model: nn.Module | None = None) -> Batch:
    """The batch with every modality in ``removed`` absent for all samples (present False + placeholders)."""
    removed = set(removed)
    unknown = removed - set(batch.inputs)
    if unknown:
        raise ValueError(f"cannot remove {sorted(unknown)}: the batch has modalities {batch.modalities}")
    inputs, present = dict(batch.inputs), dict(batch.present)
    for name in removed:
        inputs[name] = {k: _placeholder(model, name, k, v) for k, v in batch.inputs[name].items()}
        present[name] = torch.zeros_like(batch.present[name], dtype=torch.bool)
    return Batch(inputs=inputs, present=present, labels=batch.labels, ids=list(batch.ids))


def shapley_values(values: dict[frozenset, float], players: Sequence[str]) -> dict[str, float]:
    """Exact Shapley values φ_i = Σ_{S ⊆ N\\{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)).

    ``values`` maps every subset of ``players`` (the empty set included) to v(S). Σ φ_i = v(N) − v(∅).
    """
    n = len(players)
    phi = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total += weight * (values[s | {player}] - values[s])
        phi[player] = total
    return phi


def evaluate_modality_ablations(
    model: nn.Module,
    loader: Iterable[Batch],
    metric: Metric | None = None,
    modalities: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Metric with every subset of modalities present (all others removed for all samples).

    Returns ``full`` (all present), ``subsets`` (one entry per non-empty subset: modalities, value, relative =
    value / full), ``removed`` (per modality: value without it, ``drop`` = full − value, ``relative``),
    ``only`` (per modality: value with it alone), ``shapley`` (exact Shapley values of the metric over the
    subset lattice; they sum to full − empty) and ``empty`` (no modality: the model's prior output, or the
    majority-class accuracy when the model refuses an empty batch; ``empty_source`` says which).
    """
    metric = metric or accuracy
    batches = list(loader)  # iterated once per subset
    if not batches:
        raise ValueError("evaluate_modality_ablations: the loader yielded no batches")
    names = list(modalities or batches[0].modalities)
    if len(names) > 6:
        raise ValueError(f"{len(names)} modalities make {2 ** len(names)} subsets; pass modalities=[...] to choose")
    values: dict[frozenset, float] = {}
    empty_source = "model"
    y_true = None
    for size in range(len(names) + 1):
        for subset in itertools.combinations(names, size):
            removed = [n for n in names if n not in subset]
            try:
                y_true, probs, _ = predict_batches(
                    model, batches, lambda b, r=removed: remove_modalities(b, r, model), device
                )
            except (ValueError, RuntimeError):
                if size:
                    raise
                values[frozenset()] = math.nan  # filled below from the labels
                continue
            values[frozenset(subset)] = float(metric(y_true, probs))
    if math.isnan(values[frozenset()]):
        empty_source = "majority_class"
        values[frozenset()] = _majority_baseline(y_true, metric, probs.shape[1])
    full = values[frozenset(names)]
    ratio = lambda v: v / full if full else math.nan  # noqa: E731
    subsets = [
        {"modalities": sorted(s, key=names.index), "value": v, "relative": ratio(v)} for s, v in values.items() if s
    ]
    return {
        "modalities": names,
        "full": full,
        "empty": values[frozenset()],
        "empty_source": empty_source,
        "subsets": sorted(subsets, key=lambda e: (len(e["modalities"]), e["modalities"])),
        "removed": {
            n: {"value": values[frozenset(names) - {n}], "drop": full - values[frozenset(names) - {n}],
                "relative": ratio(values[frozenset(names) - {n}])}
            for n in names
        },
        "only": {n: values[frozenset({n})] for n in names},
        "shapley": shapley_values(values, names),
    }


def _majority_baseline(y_true: np.ndarray, metric: Metric, num_classes: int) -> float:
    """Metric of always predicting the most frequent class (label-wise majority for multi-hot targets)."""
    if y_true.ndim == 2:
        probs = np.broadcast_to((y_true.mean(0) >= 0.5).astype(float), y_true.shape)
    else:
        probs = np.zeros((len(y_true), num_classes))
        probs[:, np.bincount(y_true, minlength=num_classes).argmax()] = 1.0
    return float(metric(y_true, probs))


# ---------------------------------------------------------------------------------------------- corruptions


def rows_to_batches(model: nn.Module, rows: list[dict[str, Any]], batch_size: int = 32) -> list[Batch]:
    """Manifest-style rows {id, <modality>: raw, label} → Batches via the model's processors and labels."""
    processors, labels, task = model.processors, list(model.labels), model_task(model)
    index = {name: i for i, name in enumerate(labels)}

    def label_of(i: int, row: dict[str, Any]) -> Any:
        value = row.get("label")
        names = value if isinstance(value, list) else [value]
        for name in names:
            if str(name) not in index:
                raise ValueError(f"row {i} (id {row.get('id', i)!r}): label {name!r} is not one of {labels}")
        if task == "multilabel":
            return [1.0 if lab in {str(n) for n in names} else 0.0 for lab in labels]
        return index[str(names[0])]

    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        inputs, present = {}, {}
        for name, processor in processors.items():
            items = [processor.empty() if r.get(name) is None else processor(r[name]) for r in chunk]
            inputs[name] = processor.collate(items)
            present[name] = torch.tensor([r.get(name) is not None for r in chunk], dtype=torch.bool)
        y = [label_of(start + i, r) for i, r in enumerate(chunk)]
        batches.append(
            Batch(inputs, present, torch.tensor(y), [str(r.get("id", start + i)) for i, r in enumerate(chunk)])
        )
    return batches


def _modalities_of_kind(model: nn.Module, batch: Batch, kind: str) -> list[str]:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "modalities"):
        return [n for n, m in config.modalities.items() if m.kind == kind and n in batch.inputs]
    keys = {"image": "pixel_values", "text": "input_ids", "audio": "input_values"}
    return [n for n, tensors in batch.inputs.items() if keys.get(kind) in tensors or (kind == "audio" and "features" in tensors)]


def _text_specials(model: nn.Module, modality: str) -> tuple[int, list[int]]:
    processor = (getattr(model, "_processors", None) or {}).get(modality)
    pad = int(getattr(processor, "pad_token_id", 0) or 0)
    tokenizer = getattr(processor, "tokenizer", None)
    specials = list(getattr(tokenizer, "all_special_ids", []) or [])
    return pad, specials


def evaluate_corruptions(
    model: nn.Module,
    data: Iterable[Batch] | list[dict[str, Any]],
    corruption: str,
    severities: Sequence[float] = (0, 1, 2, 3, 4, 5),
    modality: str | None = None,
    metric: Metric | None = None,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Imperfection curve: metric at each corruption severity (see corruptions.CORRUPTIONS for the scale).

    ``data``: a loader of Batches, or raw manifest-style rows (dicts; needs ``model.processors`` and
    ``model.labels``). Raw-level corruptions (audio_noise) are applied to the raw rows' waveforms when rows
    are given. ``modality`` defaults to every model modality of the corruption's kind.

    Returns severities, the physical ``parameters``, ``values``, ``clean`` (severity 0), ``relative``
    (value / clean) and ``relative_robustness`` = area under the curve / (clean × severity range)
    (trapezoid over sorted severities; 1.0 = no degradation).
    """
    spec = get_corruption(corruption)
    metric = metric or accuracy
    rows = data if isinstance(data, list) and (not data or isinstance(data[0], dict)) else None
    clean_batches = rows_to_batches(model, rows, batch_size) if rows is not None else list(data)
    if not clean_batches:
        raise ValueError("evaluate_corruptions: no data")
    targets = [modality] if modality else _modalities_of_kind(model, clean_batches[0], spec.kind)
    if not targets:
        raise ValueError(f"{spec.name} corrupts {spec.kind} inputs; the model/batch has no {spec.kind} modality")
    severities = sorted(float(s) for s in set(severities) | {0.0})

    def batches_at(severity: float) -> list[Batch]:
        if severity == 0:
            return clean_batches
        if spec.raw_level and rows is not None:
            corrupted = rows
            for name in targets:
                corrupted = corrupt_rows(corrupted, spec, severity, name, seed)
            return rows_to_batches(model, corrupted, batch_size)
        out = []
        for i, batch in enumerate(clean_batches):
            for name in targets:
                pad, specials = _text_specials(model, name)
                batch = apply_corruption(batch, spec, severity, name, seed + i, pad, specials)
            out.append(batch)
        return out

    values = []
    for severity in severities:
        y_true, probs, _ = predict_batches(model, batches_at(severity), device=device)
        values.append(float(metric(y_true, probs)))
    clean = values[0]
    span = severities[-1] - severities[0]
    area = float(_trapezoid(values, severities)) if span > 0 else values[-1]
    parameters = [spec.parameter(s) for s in severities]
    return {
        "corruption": spec.name,
        "kind": spec.kind,
        "modalities": targets,
        "description": spec.description,
        "severities": severities,
        "parameters": [None if math.isinf(p) else p for p in parameters],
        "values": values,
        "clean": clean,
        "relative": [v / clean if clean else math.nan for v in values],
        "relative_robustness": area / (clean * span) if clean and span > 0 else (area / clean if clean else math.nan),
    }


__all__ = [
    "accuracy",
    "predict_batches",
    "remove_modalities",
    "shapley_values",
    "evaluate_modality_ablations",
    "rows_to_batches",
    "evaluate_corruptions",
]
