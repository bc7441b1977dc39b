"""One evaluation report for a saved model on a data split: quality, efficiency, robustness, provenance.

    report = build_report(model, loader, options=ReportOptions(bootstrap=1000))   # a JSON-ready dict
    paths = write_report(report, "eval_out")   # report.json (validated), report.md, report.html

:func:`evaluate_path` does the whole job for ``polymodal eval``: load a model or run directory, rebuild the
split it was trained on (or read a manifest), build the report and write it with ``metrics.json`` (the
classification report) and ``predictions.json`` (per-sample probabilities, for ``eval --compare``).

The report layout is versioned (``schema_version``) and described by ``report_schema.json`` next to this
file; :func:`validate_report` checks a report against it. Non-finite numbers are written as null (strict
JSON has no NaN).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")
# Corruptions tried per modality kind (see corruptions.CORRUPTIONS for the severity scale).
CORRUPTIONS_BY_KIND = {"image": ("gaussian_noise", "gaussian_blur"), "audio": ("audio_noise",), "text": ("token_dropout",)}
RANK_BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


@dataclass
class ReportOptions:
    bootstrap: int = 1000  # resamples for the confidence intervals (0 = no intervals)
    confidence: float = 0.95
    seed: int = 0  # bootstrap resampling and corruption noise
    n_bins: int = 15  # calibration bins
    efficiency: bool = True
    robustness: bool = True
    severities: tuple[float, ...] = (0, 1, 3, 5)
    corruptions: tuple[str, ...] | None = None  # default: CORRUPTIONS_BY_KIND for the model's modalities
    efficiency_batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 3
    repeats: int = 20
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)  # copied into meta.options (e.g. the CLI command)


# ---------------------------------------------------------------------------------------------- provenance


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(batches: list) -> str:
    """sha256 over every sample id, label and processed input tensor, in loader order.

    Two evaluations with the same fingerprint saw byte-identical model inputs (same rows, same processing).
    """
    digest = hashlib.sha256()
    for batch in batches:
        digest.update("\x1f".join(map(str, batch.ids)).encode())
        if batch.labels is not None:
            digest.update(batch.labels.detach().cpu().contiguous().numpy().tobytes())
        for name in sorted(batch.inputs):
            digest.update(name.encode())
            digest.update(batch.present[name].cpu().numpy().tobytes())
            for key in sorted(batch.inputs[name]):
                digest.update(key.encode())
                digest.update(batch.inputs[name][key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def config_hash(model_dir: str | Path | None, model: Any) -> str:
    """sha256 of the saved config.json (version field left out) or, without a directory, of the model config."""
    if model_dir is not None and (Path(model_dir) / "config.json").exists():
        payload = json.loads((Path(model_dir) / "config.json").read_text())
        payload.pop("polymodal_version", None)
        return _sha256_json(payload)
    from ..config import config_to_dict

    config = getattr(model, "config", None)
    return _sha256_json(config_to_dict(config) if dataclasses.is_dataclass(config) else repr(config))


def _meta(model: Any, batches: list, options: ReportOptions, context: dict[str, Any]) -> dict[str, Any]:
    from .. import __version__

    modalities = getattr(getattr(model, "config", None), "modalities", {}) or {}
    train_seed = context.get("train_seed")
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "polymodal_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": options.device,
        "torch_threads": torch.get_num_threads(),
        "seed": options.seed,
        "train_seed": train_seed,
        "architecture": type(model).__name__,
        "task": getattr(model, "task", None),
        "labels": [str(x) for x in (getattr(model, "labels", None) or context.get("labels") or [])],
        "modalities": {name: getattr(m, "kind", str(m)) for name, m in modalities.items()},
        "model_dir": None if context.get("model_dir") is None else str(context["model_dir"]),
        "run_dir": None if context.get("run_dir") is None else str(context["run_dir"]),
        "config_hash": config_hash(context.get("model_dir"), model),
        "data": {
            "source": context.get("data_source"),
            "split": context.get("split"),
            "num_samples": int(sum(len(b) for b in batches)),
            "fingerprint": data_fingerprint(batches),
        },
        "options": _jsonable({**dataclasses.asdict(options), "extra": None, **options.extra}),
    }


# ---------------------------------------------------------------------------------------------- quality


def _bootstrap_intervals(y_true: np.ndarray, probs: np.ndarray, task: str, options: ReportOptions) -> dict[str, Any]:
    """CIs of the headline metrics. Accuracy (a proportion): the exact Clopper–Pearson interval, for every n
    (3/3 correct → [0.29, 1.0], not a zero-width bootstrap [1, 1]). Macro-F1, ROC-AUC, ECE: percentile bootstrap,
    all on the SAME resample indices (one seed), so they are mutually consistent; a degenerate bootstrap is
    flagged (``degenerate``, ``note``)."""
    from .bootstrap import macro_f1_for
    from .calibration import expected_calibration_error
    from .classification import classification_report
    from .intervals import PROPORTION_CI, guarded_bootstrap_ci, proportion_ci

    result: dict[str, Any] = {"n_resamples": options.bootstrap, "confidence": options.confidence,
                              "seed": options.seed, "method": "percentile",
                              "proportion_method": PROPORTION_CI, "intervals": {}}
    if options.bootstrap <= 0:
        return result
    c = probs.shape[1]
    if task == "multilabel":
        # Sample-level resampling keeps the label correlation.
        def auc(t, p):
            value = classification_report(t, p, task="multilabel")["roc_auc"]
            if value is None:
                raise ValueError("undefined")
            return value

        metrics = {"roc_auc": (auc, (y_true, probs))}
        right = int(((probs >= 0.5) == (y_true >= 0.5)).all(axis=1).sum())
    else:
        y_pred = probs.argmax(axis=1)

        def auc(t, p):
            value = classification_report(t, p, task=task)["roc_auc"]
            if value is None:
                raise ValueError("undefined")
            return value

        right = int((y_true.reshape(-1) == y_pred).sum())
        metrics = {
            "macro_f1": (macro_f1_for(c), (y_true, y_pred)),
            "roc_auc": (auc, (y_true, probs)),
            "ece": (lambda t, p: expected_calibration_error(t, p, options.n_bins), (y_true, probs)),
        }
    result["intervals"]["accuracy"] = proportion_ci(right, probs.shape[0], options.confidence)
    for name, (fn, arrays) in metrics.items():
        result["intervals"][name] = guarded_bootstrap_ci(fn, arrays, options.bootstrap, options.confidence,
                                                         options.seed)
    return result


def classification_quality(y_true: np.ndarray, probs: np.ndarray, labels: list[str], task: str,
                           options: ReportOptions, loss: float | None = None) -> dict[str, Any]:
    """Classification report + ROC/PR curves + calibration + bootstrap CIs for one set of predictions."""
    from .calibration import calibration_report
    from .classification import classification_report
    from .curves import one_vs_rest_curves

    report = classification_report(y_true, probs, labels, task)
    if loss is not None:
        report["loss"] = loss
    calibration = calibration_report(y_true, probs, task, options.n_bins)
    quality = {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "weighted_f1": report["weighted_f1"],
        "roc_auc": report["roc_auc"],
        "ece": calibration["ece"],
        "loss": loss,
        "num_samples": report["num_samples"],
        "classification_report": report,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"] if task != "multilabel" else None,
        "curves": one_vs_rest_curves(y_true, probs, labels),
        "calibration": calibration,
        "bootstrap": _bootstrap_intervals(y_true, probs, task, options),
    }
    return quality


# ---------------------------------------------------------------------------------------------- alignment


def _collected(model: Any, batches: list, transform=None, device: str = "cpu"):
    """collect_embeddings over the batches (each passed through ``transform`` first, e.g. a corruption)."""
    from ..alignment.evaluate import collect_embeddings

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

    from .bootstrap import vectorized
    from .intervals import guarded_bootstrap_ci

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
    counts = []
    for low, high in RANK_BINS:
        counts.append(int(sum(1 for r in ranks if r >= low and (high is None or r <= high))))
    bins = [str(low) if low == high else (f"{low}-{high}" if high else f">{low - 1}") for low, high in RANK_BINS]
    return {"bins": bins, "counts": counts}


def alignment_quality(model: Any, batches: list, options: ReportOptions, labels: list[str] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Retrieval per modality pair (instance level), evaluate_alignment's full report (instance + class level,
    zero-shot), the instance headline with its bootstrap CI, and the rank histogram: every instance number
    from ``alignment.evaluate.instance_retrieval`` (own pair or an identical copy counts), so the table, the
    headline, the CI and ``metrics.json`` of the run agree."""
    from ..alignment.evaluate import evaluate_alignment
    from ..alignment.metrics import INSTANCE_DEFINITION

    data = _collected(model, batches, device=options.device)
    full = evaluate_alignment(model, data, class_names=labels or None, device=options.device, keep_ranks=True)
    ranks = full.pop("instance_ranks", {})
    directions = (full.get("retrieval") or {}).get("instance") or {}
    result: dict[str, Any] = {"pairs": _instance_tables(directions), "source": "polymodal.alignment.evaluate",
                              "instance_definition": INSTANCE_DEFINITION}
    result["evaluate_alignment"] = _jsonable(full)
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


# ---------------------------------------------------------------------------------------------- robustness


def _corruptions_for(model: Any, options: ReportOptions) -> list[tuple[str, str]]:
    """(corruption, modality) pairs to run for this model."""
    from .corruptions import get_corruption

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
    """Accuracy with every subset of modalities, each modality removed, Shapley contributions, corruption curves."""
    from .robustness import evaluate_corruptions, evaluate_modality_ablations

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
    for corruption, modality in _corruptions_for(model, options):
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
    of an image still counts as a copy."""
    from ..alignment.evaluate import instance_retrieval
    from .corruptions import apply_corruption, get_corruption

    clean_groups = _collected(model, batches, device=options.device).groups
    curves, skipped = [], []
    for corruption, modality in _corruptions_for(model, options):
        spec = get_corruption(corruption)
        values = []
        try:
            for severity in sorted({0.0, *map(float, options.severities)}):
                def transform(b, s=severity, c=spec, m=modality):
                    return b if s == 0 else apply_corruption(b, c, s, m, options.seed)

                data = _collected(model, batches, transform, options.device)
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


# ---------------------------------------------------------------------------------------------- training


def training_curves(run_dir: str | Path | None) -> dict[str, Any] | None:
    """Series {metric: {step, value}} from run_dir/metrics.jsonl (numeric columns only), or None."""
    if run_dir is None or not (Path(run_dir) / "metrics.jsonl").exists():
        return None
    series: dict[str, dict[str, list]] = {}
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # last line cut short by a crash: ignore it
                continue
            raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}:{number} is not valid JSON: {err}") from err
        step = row.get("step", row.get("epoch", number))
        for key, value in row.items():
            if key in ("kind", "epoch", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key in ("lr", "time", "seconds") or key.endswith("_seconds"):
                continue
            entry = series.setdefault(key, {"step": [], "value": []})
            entry["step"].append(step)
            entry["value"].append(float(value))
    return {"series": series, "source": str(Path(run_dir) / "metrics.jsonl")} if series else None


# ---------------------------------------------------------------------------------------------- build


def _collect(loader: Any) -> list:
    batches = list(loader)
    if not batches:
        raise ValueError("the evaluation data is empty (the loader yielded no batches)")
    return batches


def is_alignment(model: Any) -> bool:
    return type(model).__name__ == "AlignmentModel" or not hasattr(model, "head")


def build_report(model: Any, loader: Any, options: ReportOptions | None = None, **context: Any) -> dict[str, Any]:
    """Everything about ``model`` on ``loader`` as one JSON-ready dict (see report_schema.json).

    ``context``: model_dir, run_dir, split, data_source, train_seed, labels (for provenance and training
    curves). Classification models get quality/robustness by accuracy; alignment models by retrieval R@1.
    """
    from .classification import _run_model
    from .efficiency import measure_efficiency

    options = options or ReportOptions()
    model = model.to(options.device).eval()
    batches = _collect(loader)
    alignment = is_alignment(model)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "alignment" if alignment else "classification",
        "meta": _meta(model, batches, options, context),
        "quality": None,
        "retrieval": None,
        "retrieval_ranks": None,
        "efficiency": None,
        "robustness": None,
        "training": training_curves(context.get("run_dir")),
        "predictions": None,
    }
    if alignment:
        report["retrieval"], report["retrieval_ranks"] = alignment_quality(model, batches, options,
                                                                           report["meta"]["labels"])
    else:
        y_true, probs, ids, loss = _run_model(model, batches, options.device)
        if y_true is None:
            raise ValueError("the evaluation data has no labels: a report needs labelled samples")
        labels = report["meta"]["labels"] or [str(i) for i in range(probs.shape[1])]
        report["quality"] = classification_quality(y_true, probs, labels, model.task, options, loss)
        report["predictions"] = {"ids": [str(i) for i in ids], "y_true": y_true.tolist(), "probs": probs.tolist(),
                                 "labels": labels, "task": model.task}
    if options.efficiency:
        report["efficiency"] = measure_efficiency(
            model, batches[0], options.efficiency_batch_sizes, options.warmup, options.repeats, options.device
        )
    if options.robustness:
        report["robustness"] = (alignment_robustness(model, batches, options) if alignment
                                else classification_robustness(model, batches, options, loader))
    return _jsonable(report)


# ---------------------------------------------------------------------------------------------- loading


def load_any_model(path: str | Path) -> tuple[Any, Path]:
    """A MultimodalModel or AlignmentModel from a model directory or a run directory (its best/ model)."""
    from ..inference import resolve_model_dir

    model_dir = resolve_model_dir(path)
    payload = json.loads((model_dir / "config.json").read_text())
    if payload.get("architecture") == "AlignmentModel":
        from ..alignment import AlignmentModel

        return AlignmentModel.from_pretrained(model_dir), model_dir
    from ..model import MultimodalModel

    return MultimodalModel.from_pretrained(model_dir), model_dir


def _run_dir_of(path: Path, model_dir: Path) -> Path | None:
    for candidate in (path, model_dir.parent):
        if (candidate / "metrics.jsonl").exists() or (candidate / "config.yaml").exists():
            return candidate
    return None


def _run_config(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    import yaml

    for name in ("config.yaml", "config.yml", "config.json"):
        if (run_dir / name).exists():
            text = (run_dir / name).read_text()
            try:
                return (json.loads(text) if name.endswith(".json") else yaml.safe_load(text)) or {}
            except (json.JSONDecodeError, yaml.YAMLError) as err:
                raise ValueError(f"{run_dir / name} cannot be parsed: {err}") from err
    return {}


def eval_config_for(model: Any, data_manifest: str | None, split: str, run_config: dict[str, Any] | None = None):
    """The Config to evaluate a saved model: its modalities + the data it was trained on (or a manifest)."""
    from ..config import Config, DataConfig, ModelConfig, from_dict

    data = dict(getattr(model, "data_config", None) or (run_config or {}).get("data") or {})
    if data_manifest:
        if not Path(data_manifest).exists():
            raise FileNotFoundError(f"--data {data_manifest!r} does not exist")
        data.update({"name": None, "train": None, "val": None, "test": None, split: data_manifest})
    elif not data:
        raise ValueError("this model directory does not record its training data: pass --data MANIFEST")
    config = Config()
    if is_alignment(model):
        config.model = ModelConfig(modalities=dict(model.config.modalities))
        labels = ((run_config or {}).get("model") or {}).get("head", {}).get("labels") or []
        config.model.head = dataclasses.replace(config.model.head, labels=list(labels))
    else:
        config.model = model.config
    config.data = from_dict(DataConfig, data, "data")
    if (run_config or {}).get("train", {}).get("seed") is not None:
        config.train = dataclasses.replace(config.train, seed=int(run_config["train"]["seed"]))
    return config


def evaluate_path(path: str | Path, data: str | None = None, split: str = "test", out: str | Path | None = None,
                  options: ReportOptions | None = None,
                  overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """``polymodal eval``: load, evaluate, write metrics.json + predictions.json + report.{json,md,html}.

    ``overrides``: processor options of the saved model (``--set model.modalities.image.processor.max_pixels=N``),
    see :func:`polymodal.inference.apply_processor_overrides`."""
    from ..model import atomic_write_text
    from ..pipeline import prepare

    options = options or ReportOptions()
    path = Path(path)
    model, model_dir = load_any_model(path)
    if overrides:
        from ..inference import apply_processor_overrides

        apply_processor_overrides(model, overrides)
    run_dir = _run_dir_of(path, model_dir)
    run_config = _run_config(run_dir)
    config = eval_config_for(model, data, split, run_config)
    _, loaders, labels = prepare(config, splits=(split,))
    if split not in loaders:
        raise ValueError(f"the data provides no {split!r} split")
    source = data or (f"builtin:{config.data.name}" if config.data.name else getattr(config.data, split))
    report = build_report(model, loaders[split], options, model_dir=model_dir, run_dir=run_dir, split=split,
                          data_source=source, train_seed=(run_config.get("train") or {}).get("seed"), labels=labels)
    out_dir = Path(out) if out else (run_dir or model_dir) / f"eval_{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_report(report, out_dir)
    if report["quality"] is not None:
        metrics = report["quality"]["classification_report"]
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        paths["metrics"] = out_dir / "metrics.json"
    return report, paths


# ---------------------------------------------------------------------------------------------- output


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN / inf → None (strict JSON); tuples → lists; numpy / torch scalars → numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_report(report: dict[str, Any]) -> None:
    """Raise ValueError naming the failing path when ``report`` does not match report_schema.json."""
    try:
        import jsonschema
    except ImportError:  # validation is a development check; the report itself does not need it
        return
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(report))  # descends into oneOf branches
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "<root>"
        message = error.message if len(error.message) < 300 else error.message[:300] + "..."
        raise ValueError(f"report.json does not match its schema at {where}: {message}")


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Validate and write report.json, report.md, report.html and predictions.json (when present)."""
    from ..model import atomic_write_text
    from .html import render_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    validate_report(report)
    predictions = report.get("predictions")
    slim = {**report, "predictions": None if predictions is None else {"file": "predictions.json",
                                                                       "num_samples": len(predictions["ids"])}}
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write_text(paths["json"], json.dumps(slim, indent=2, allow_nan=False))
    atomic_write_text(paths["md"], render_markdown(slim))
    atomic_write_text(paths["html"], render_html(slim))
    if predictions is not None:
        paths["predictions"] = out_dir / "predictions.json"
        atomic_write_text(paths["predictions"], json.dumps(predictions, allow_nan=False))
    return paths


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def headline_rows(report: dict[str, Any]) -> list[list[Any]]:
    """[metric, value, CI low, CI high] for the report's headline metrics."""
    section = report.get("quality") or report.get("retrieval") or {}
    intervals = (section.get("bootstrap") or {}).get("intervals", {})
    names = ("accuracy", "macro_f1", "weighted_f1", "roc_auc", "ece", "loss") if report.get("quality") else (
        "mean_R@1", "mean_R@5", "mean_R@10", "mean_zeroshot_top1", "instance_mean_R@1", "instance_mean_recall")
    rows = []
    for name in names:
        ci = intervals.get(name) or {}
        if name in section:
            rows.append([name, section.get(name), ci.get("low"), ci.get("high")])
    for name, ci in intervals.items():
        if name not in names:
            rows.append([name, ci.get("point"), ci.get("low"), ci.get("high")])
    return rows


def _instance_definition(retrieval: dict[str, Any]) -> str:
    from ..alignment.metrics import INSTANCE_DEFINITION

    return retrieval.get("instance_definition") or INSTANCE_DEFINITION


def interval_notes(report: dict[str, Any]) -> list[str]:
    """Sentences that say how the CIs were made and where one is not a real interval (md and html share them)."""
    section = report.get("quality") or report.get("retrieval") or {}
    conf = section.get("bootstrap") or {}
    notes = []
    if conf.get("n_resamples"):
        if report.get("quality"):
            notes.append(f"Accuracy CI: exact Clopper–Pearson binomial interval (any n). Other CIs: percentile "
                         f"bootstrap, {conf['n_resamples']} resamples, seed {conf['seed']}.")
        else:
            notes.append(f"instance_R@1 CI: percentile bootstrap over samples, {conf['n_resamples']} resamples, "
                         f"seed {conf['seed']}; instance_mean_R@1 is the mean of both directions' instance R@1 "
                         f"({_instance_definition(section)}).")
    for name, ci in (conf.get("intervals") or {}).items():
        if ci.get("degenerate"):
            notes.append(f"{name}: {ci.get('note')}")
    quality = report.get("quality") or {}
    classification = quality.get("classification_report") or {}
    if classification.get("no_support_classes"):
        from .classification import support_note

        notes.append(f"Classes: {support_note(classification)}.")
    return notes


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: provenance, quality with CIs, efficiency, robustness, training."""
    from .classification import format_report_table

    meta = report["meta"]
    conf = ((report.get("quality") or report.get("retrieval") or {}).get("bootstrap") or {})
    lines = [
        f"# polymodal evaluation report ({report['kind']})",
        "",
        f"- model: `{meta['model_dir']}` ({meta['architecture']}, task {meta['task']}, "
        f"modalities {', '.join(f'{k} ({v})' for k, v in meta['modalities'].items())})",
        f"- data: {meta['data']['source']} split `{meta['data']['split']}`, {meta['data']['num_samples']} samples, "
        f"fingerprint `{meta['data']['fingerprint'][:16]}`",
        f"- config hash `{meta['config_hash'][:16]}`, seed {meta['seed']} (training seed {meta['train_seed']})",
        f"- polymodal {meta['polymodal_version']}, torch {meta['torch_version']}, python {meta['python_version']}, "
        f"{meta['device']} with {meta['torch_threads']} threads; {meta['created_utc']}",
        f"- schema version {report['schema_version']}",
        "",
        "## Quality",
        "",
    ]
    ci_title = f"{int(round(100 * conf.get('confidence', 0.95)))}% CI"
    lines += [_table(["metric", "value", f"{ci_title} low", f"{ci_title} high"], headline_rows(report)), ""]
    lines += [f"- {note}" for note in interval_notes(report)] + ([""] if interval_notes(report) else [])
    quality = report.get("quality")
    if quality:
        lines += ["```", format_report_table(quality["classification_report"]), "```", ""]
        cal = quality["calibration"]
        lines += [f"Calibration ({cal['n_bins']} bins): ECE {_fmt(cal['ece'])}, MCE {_fmt(cal['mce'])}, "
                  f"classwise ECE {_fmt(cal['classwise_ece'])}, Brier {_fmt(cal['brier'])}, NLL {_fmt(cal['nll'])}.", ""]
    retrieval = report.get("retrieval")
    if retrieval:
        for pair, metrics in retrieval["pairs"].items():
            rows = [[k, v] for k, v in metrics.items()]
            lines += [f"### Retrieval {pair}", "", f"Instance level: {_instance_definition(retrieval)}.", "",
                      _table(["metric", "value"], rows), ""]
        if retrieval.get("evaluate_alignment"):
            from ..alignment.evaluate import format_alignment_table

            try:
                table = format_alignment_table(retrieval["evaluate_alignment"])
            except (KeyError, TypeError, ValueError):  # null (non-finite) cells in the JSON form
                table = "(see report.json: retrieval.evaluate_alignment)"
            lines += ["### polymodal.alignment.evaluate", "", table, ""]
        if retrieval.get("evaluate_alignment_error"):
            lines += [f"evaluate_alignment failed: {retrieval['evaluate_alignment_error']}", ""]
    eff = report.get("efficiency")
    if eff:
        mem = eff["memory"]
        peak = mem.get("peak_allocated_mb") or mem.get("peak_rss_mb")
        lines += ["## Efficiency", "", _table(["measure", "value"], [
            ["parameters (total)", eff["params"]["total"]],
            ["parameters (trainable)", eff["params"]["trainable"]],
            ["FLOPs / sample", eff["flops_per_sample"]],
            ["latency p50, batch 1 (ms)", eff["latency_ms"]["p50"]],
            ["latency p95, batch 1 (ms)", eff["latency_ms"]["p95"]],
            [f"throughput, batch {eff['throughput_batch_size']} (samples/s)", eff["throughput_samples_per_s"]],
            [f"peak memory (MB, {mem['source']})", peak],
            ["size on disk (MB)", (eff.get("disk") or {}).get("mb")],
            ["torch threads", eff["torch_threads"]],
            ["device", eff["device"]],
        ]), ""]
    rob = report.get("robustness")
    if rob:
        lines += ["## Robustness", ""]
        if rob.get("removed"):
            lines += [f"Metric: {rob['metric']}; all modalities: {_fmt(rob['full'])}.", ""]
            lines += [_table(["modality removed", rob["metric"], "drop", "relative"],
                             [[n, r["value"], r["drop"], r["relative"]] for n, r in rob["removed"].items()]), ""]
            lines += [_table(["modalities present", rob["metric"], "relative"],
                             [["+".join(s["modalities"]), s["value"], s["relative"]] for s in rob["subsets"]]), ""]
            lines += ["Modality contribution (Shapley values of the metric over the subset lattice):", "",
                      _table(["modality", "Shapley", "share", "drop when removed", "alone"],
                             [[n, c["shapley"], c["share"], c["drop_when_removed"], c["alone"]]
                              for n, c in rob["contribution"].items()]), ""]
        if rob.get("corruptions"):
            lines += [_table(["corruption", "modality", "severities", "values", "relative robustness"],
                             [[c["corruption"], "+".join(c["modalities"]), ", ".join(_fmt(s, 0) for s in c["severities"]),
                               ", ".join(_fmt(v, 3) for v in c["values"]), c["relative_robustness"]]
                              for c in rob["corruptions"]]), ""]
        for item in rob.get("skipped") or []:
            lines.append(f"- skipped {item['corruption']} on {item['modality']}: {item['reason']}")
    training = report.get("training")
    if training:
        lines += ["", "## Training", "", f"Curves from `{training['source']}`:", ""]
        lines += [_table(["series", "points", "last"], [[k, len(v["value"]), v["value"][-1]]
                                                          for k, v in training["series"].items()]), ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = [
    "SCHEMA_VERSION",
    "ReportOptions",
    "build_report",
    "classification_quality",
    "alignment_quality",
    "classification_robustness",
    "training_curves",
    "data_fingerprint",
    "config_hash",
    "evaluate_path",
    "eval_config_for",
    "load_any_model",
    "write_report",
    "validate_report",
    "load_schema",
    "render_markdown",
    "headline_rows",
    "interval_notes",
    "rank_histogram",
]
