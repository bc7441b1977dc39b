"""``polymodal eval --compare RUN_A RUN_B``: load (or compute) both runs' predictions, then compare them with the
statistics of :mod:`polymodal.evaluation.compare` (paired bootstrap / McNemar's exact test).

Each side is either an eval directory / predictions.json written by ``polymodal eval``, or a run / model
directory, which is then evaluated on the split it was trained on (a predictions.json older than the weights is
ignored: it describes a previous model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluation.compare import compare_predictions


def _weights_mtime(path: Path) -> float | None:
    """Modification time of the model weights a run / model directory holds (None: no weights found)."""
    for weights in (path / "best" / "model.safetensors", path / "model.safetensors"):
        if weights.exists():
            return weights.stat().st_mtime
    return None


def _predictions_file(path: Path, split: str) -> Path | None:
    """The saved predictions.json of ``path``, or None when there is none or it is older than the weights.

    A run directory retrained after its last ``polymodal eval`` keeps the old eval_<split>/ folder: its
    predictions describe the previous model, so they are ignored and the current weights are evaluated.
    """
    if path.is_file():
        return path
    weights = _weights_mtime(path.parent if path.name == "best" else path)
    for candidate in (path / "predictions.json", path / f"eval_{split}" / "predictions.json",
                      path.parent / f"eval_{split}" / "predictions.json" if path.name == "best" else None):
        if candidate is not None and candidate.exists():
            if weights is not None and candidate.stat().st_mtime < weights:
                return None  # stale: written before the model was last trained
            return candidate
    return None


def load_predictions(path: str | Path, data: str | None = None, split: str = "test") -> dict[str, Any]:
    """{ids, y_true, probs, labels, task, source} from predictions.json, or by evaluating the model at ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    found = _predictions_file(path, split)
    if found is not None:
        try:
            payload = json.loads(found.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{found} is not valid JSON: {err}") from err
        missing = [k for k in ("ids", "y_true", "probs", "labels") if k not in payload]
        if missing and "predictions" in payload:  # written by `polymodal eval` for a generation model
            raise ValueError(f"{found} holds {payload.get('task', 'generation')} predictions (generated text): "
                             "--compare works on classifiers' predictions")
        if missing:
            raise ValueError(f"{found} lacks {missing}: is it a predictions.json written by `polymodal eval`?")
        payload["source"] = str(found)
        return payload
    from ..evaluation.report import eval_config_for, is_alignment, load_any_model
    from ..metrics.classification import predict_loader
    from .train import prepare

    model, model_dir = load_any_model(path)
    if is_alignment(model):
        raise ValueError(f"{model_dir} is an alignment model: --compare works on classifiers' predictions")
    if hasattr(model, "generate_text"):
        raise ValueError(f"{model_dir} is a {model.task_name} model (text generation): --compare works on "
                         "classifiers' predictions")
    config = eval_config_for(model, data, split)
    _, loaders, _ = prepare(config, splits=(split,))
    y_true, probs, ids = predict_loader(model, loaders[split])
    if y_true is None:
        raise ValueError(f"the {split} data of {model_dir} has no labels")
    return {"ids": ids, "y_true": y_true.tolist(), "probs": probs.tolist(), "labels": list(model.labels),
            "task": model.task, "source": str(model_dir)}


def compare_runs(run_a: str | Path, run_b: str | Path, metric: str = "accuracy", n_resamples: int = 1000,
                 seed: int = 0, data: str | None = None, split: str = "test", alpha: float = 0.05) -> dict[str, Any]:
    """Load (or compute) both runs' predictions and compare them with :func:`compare_predictions`."""
    a = load_predictions(run_a, data, split)
    b = load_predictions(run_b, data, split)
    return compare_predictions(a, b, metric, n_resamples, seed, alpha=alpha)


__all__ = ["compare_runs", "load_predictions"]
