"""``polymodal ensemble``: load saved classifiers, check they can be combined, fit the method's parameters on
the VALIDATION split only, save the ensemble, and report it against each member on the test split."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ensemble.model import METHODS, EnsembleError, EnsembleModel

WEIGHTS_FROM = ("accuracy", "log_loss")
DATA_KEYS = ("name", "train", "val", "test", "limit")  # what must match for members to share val / test rows


def load_members(paths: list[str | Path]) -> list[Any]:
    """Load each run / model directory as a MultimodalModel and check they can be combined.

    Raises EnsembleError (one line, naming both runs) for different label sets, tasks other than multiclass,
    different inputs (modality names, kinds, processor options) or different data; an alignment model or an
    ensemble as a member is refused too.
    """
    from ..inference.predictor import load_model

    if len(paths) < 2:
        raise EnsembleError(f"an ensemble needs at least two runs, got {len(paths)}")
    members = []
    for path in paths:
        model, _ = load_model(path)
        if type(model).__name__ != "MultimodalModel":
            raise EnsembleError(f"{path} is a {type(model).__name__}: ensemble members must be classifiers "
                                "saved by `polymodal train` (MultimodalModel)")
        if model.task != "multiclass":
            raise EnsembleError(f"{path} is a {model.task} classifier: ensembles combine multiclass classifiers")
        members.append(model)
    first, first_path = members[0], paths[0]
    for model, path in zip(members[1:], paths[1:]):
        if list(model.labels) != list(first.labels):
            raise EnsembleError(f"{path} predicts labels {list(model.labels)} but {first_path} predicts "
                                f"{list(first.labels)}: ensemble members need the same label set in the same order")
        if _inputs(model) != _inputs(first):
            raise EnsembleError(f"{path} takes inputs {_inputs(model)} but {first_path} takes {_inputs(first)}: "
                                "members must share modality names, kinds and processor options")
        if _data(model) != _data(first):
            raise EnsembleError(f"{path} was trained on data {_data(model)} but {first_path} on {_data(first)}: "
                                "members must share the data (the validation and test rows)")
    return members


def _inputs(model: Any) -> dict[str, Any]:
    return {name: {"kind": m.kind, "processor": m.processor} for name, m in model.config.modalities.items()}


def _data(model: Any) -> dict[str, Any]:
    return {key: (model.data_config or {}).get(key) for key in DATA_KEYS}


def split_predictions(members: list[Any], split: str, data: str | None = None) -> dict[str, Any]:
    """Members' probabilities on one split: {probs [M, N, C] float64, y [N], ids [N]}. Only ``split`` is
    loaded (``prepare(..., splits=(split,))``), so fitting on "val" never reads a test row."""
    from ..evaluation.report import eval_config_for
    from ..metrics.classification import predict_loader
    from .train import prepare

    if data is None and not getattr(members[0], "data_config", None):
        raise EnsembleError(f"the members do not record their training data: pass --{split} MANIFEST "
                            f"(the {split} rows to use)")
    config = eval_config_for(members[0], data, split)
    _, loaders, _ = prepare(config, splits=(split,))
    if split not in loaders:
        raise EnsembleError(f"the members' data has no {split!r} split: pass --{split} MANIFEST")
    probs, y, ids = [], None, None
    for member in members:
        y_m, p_m, ids_m = predict_loader(member, loaders[split])
        if ids is not None and list(ids_m) != list(ids):
            raise EnsembleError(f"the {split} rows came in a different order for two members (shuffled loader?)")
        probs.append(torch.as_tensor(p_m, dtype=torch.float64))
        y, ids = y_m, ids_m
    if y is None:
        raise EnsembleError(f"the {split} split has no labels: the ensemble's parameters need labelled rows")
    return {"probs": torch.stack(probs), "y": torch.as_tensor(np.asarray(y), dtype=torch.long), "ids": list(ids)}


def member_scores(probs: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
    """Per member: accuracy and log-loss (mean −log p[y], p clamped at 1e-15 as scikit-learn's log_loss)."""
    rows = []
    for p in probs:
        picked = p[torch.arange(len(y)), y].clamp_min(1e-15)
        rows.append({"accuracy": float((p.argmax(-1) == y).double().mean()), "log_loss": float(-picked.log().mean())})
    return rows


def validation_weights(scores: list[dict[str, float]], weights_from: str) -> torch.Tensor:
    """Member weights [M] summing to 1: ∝ accuracy, or ∝ exp(−log-loss). Raises EnsembleError when all are 0."""
    if weights_from not in WEIGHTS_FROM:
        raise EnsembleError(f"--weights-from {weights_from!r}: expected one of {', '.join(WEIGHTS_FROM)}")
    raw = [s["accuracy"] if weights_from == "accuracy" else math.exp(-s["log_loss"]) for s in scores]
    total = sum(raw)
    if not total > 0:
        raise EnsembleError(f"every member scores 0 {weights_from} on the validation split: no weights to derive")
    return torch.tensor([r / total for r in raw], dtype=torch.float64)


def build_ensemble(paths: list[str | Path], method: str = "mean", weights_from: str = "accuracy", C: float = 1.0,
                   val_data: str | None = None) -> EnsembleModel:
    """Load, check and combine the runs at ``paths``. weighted / stack read the validation split only."""
    if method not in METHODS:
        raise EnsembleError(f"unknown --method {method!r}; expected one of {', '.join(METHODS)}")
    members = load_members(paths)
    info: dict[str, Any] = {"members": [{"source": str(p)} for p in paths]}
    weights, stacker = None, None
    if method in ("weighted", "stack"):
        val = split_predictions(members, "val", val_data)
        scores = member_scores(val["probs"], val["y"])
        for entry, score in zip(info["members"], scores):
            entry["val"] = score
        info["fitted_on"] = {"split": "val", "rows": len(val["ids"])}
        if method == "weighted":
            weights = validation_weights(scores, weights_from)
            info["weights_from"] = weights_from
        else:
            from ..ensemble.stacking import fit_logistic_regression, stack_features

            features = stack_features(val["probs"].clamp_min(torch.finfo(torch.float64).tiny).log())
            stacker = fit_logistic_regression(features, val["y"], len(members[0].labels), C=C)
            info["stacker"] = {"C": C, "features": "member log-probabilities [M*C]"}
    return EnsembleModel(members, method, weights, stacker, info)


def ensemble_report(ensemble: EnsembleModel, split: str = "test", data: str | None = None,
                    n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The ensemble against each member on ``split``: accuracy of both and the paired difference with its CI
    (evaluation.compare: McNemar exact below 25 discordant pairs, else the paired bootstrap)."""
    from ..evaluation.compare import compare_predictions

    preds = split_predictions(list(ensemble.members), split, data)
    probs = ensemble.combine(preds["probs"])
    labels, y = list(ensemble.labels), preds["y"].tolist()

    def side(p: torch.Tensor, source: str) -> dict[str, Any]:
        return {"ids": preds["ids"], "y_true": y, "probs": p.tolist(), "labels": labels, "task": "multiclass",
                "source": source}

    ens = side(probs, f"ensemble ({ensemble.method})")
    rows = []
    for index, member_probs in enumerate(preds["probs"]):
        source = (ensemble.info.get("members") or [{}] * (index + 1))[index].get("source", f"member {index}")
        result = compare_predictions(ens, side(member_probs, source), "accuracy", n_resamples, seed)
        rows.append({"member": index, "source": source, "member_accuracy": result["metric_b"],
                     "ensemble_accuracy": result["metric_a"], "difference": result["difference"],
                     "ci_low": result["ci_low"], "ci_high": result["ci_high"], "p_value": result["p_value"],
                     "test": result["test"], "verdict": result["verdict"]})
    return {"method": ensemble.method, "split": split, "rows": len(y),
            "ensemble_accuracy": rows[0]["ensemble_accuracy"], "comparisons": rows}


def format_report(report: dict[str, Any]) -> str:
    """Markdown: one row per member (ensemble − member accuracy with its 95% CI)."""
    lines = [f"# Ensemble ({report['method']}) on the {report['split']} split ({report['rows']} rows)", "",
             f"Ensemble accuracy: {report['ensemble_accuracy']:.4f}", "",
             "| member | member acc. | ensemble acc. | ensemble − member | 95% CI | p | test |",
             "|---|---|---|---|---|---|---|"]
    for row in report["comparisons"]:
        lines.append(f"| {row['member']}: {row['source']} | {row['member_accuracy']:.4f} | "
                     f"{row['ensemble_accuracy']:.4f} | {row['difference']:+.4f} | "
                     f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | {row['p_value']:.4f} | {row['test']} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    from ..files import atomic_write_text

    out = Path(out)
    paths = {"md": out / "ensemble_report.md", "json": out / "ensemble_report.json"}
    atomic_write_text(paths["md"], format_report(report))
    atomic_write_text(paths["json"], json.dumps(report, indent=2))
    return paths


__all__ = ["WEIGHTS_FROM", "build_ensemble", "ensemble_report", "format_report", "load_members",
           "member_scores", "split_predictions", "validation_weights", "write_report"]
