"""``explain(model_dir, inputs, out_dir)``: what a classifier looks at for one sample, as PNGs + one HTML page.

Composes the pieces of this package for one sample of a saved MultimodalModel:

1. integrated gradients per given modality (:mod:`.attributions`): image heat maps, log-mel time-frequency maps,
   text token scores; each with its baseline and Captum's convergence delta;
2. attention (:mod:`.attention`): the fusion's attention maps (transformer / cross_attention fusions) and attention
   rollout of ViT image encoders (image_vit preset, Hugging Face ViTs);
3. the modality contribution: Shapley values over the given modalities (:mod:`.shapley`);
4. ``out_dir``: ``index.html`` (self-contained: PNGs inlined, also linked), the PNGs, ``explanation.json``; every
   file written atomically.

This is the function the ``polymodal explain`` command calls.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import atomic_write_text
from ..heads import probabilities
from ..types import Batch
from . import render
from .attention import AttentionRecorder, attention_rollout, cls_patch_map, hf_attentions
from .attributions import Attribution, integrated_gradients
from .errors import ExplainError
from .shapley import sample_modality_shapley

HTML_NAME, JSON_NAME = "index.html", "explanation.json"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def resolve_target(target: str | int | None, labels: list[str], probs: torch.Tensor) -> int:
    """The class index to explain: the predicted one (None), a label name, or an index. ExplainError otherwise."""
    if target is None:
        return int(probs.argmax())
    if str(target) in labels:
        return labels.index(str(target))
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(labels):
        return target
    raise ExplainError(f"target {target!r} is not one of the model's labels {labels}; give a label name or omit it")


def _image01(processor: Any, pixels: torch.Tensor) -> np.ndarray:
    """Normalised pixel_values [C, H, W] → the picture in [0, 1], channels last [H, W, C]."""
    mean, std = getattr(processor, "mean", None), getattr(processor, "std", None)
    image = pixels.float()
    if mean is not None and std is not None:
        image = image * std + mean
    image = image / float(getattr(processor, "value_scale", 1.0) or 1.0)
    return image.permute(1, 2, 0).clamp(0, 1).numpy()


class _Writer:
    """Collects PNGs (written at once, atomically) and the HTML sections."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.files: list[str] = []
        self.sections: list[tuple[str, str]] = []

    def figure(self, image, filename: str, caption: str) -> str:
        data = render.png_bytes(image)
        render.atomic_write_bytes(self.out_dir / filename, data)
        self.files.append(filename)
        return render.figure_html(data, filename, caption)


def _attribution_section(writer: _Writer, model: nn.Module, batch: Batch, result: Attribution) -> dict[str, Any]:
    name, summary = result.modality, result.summary()
    stats = (f"target logit {result.f_input:.4f} at the input, {result.f_baseline:.4f} at the baseline "
             f"({result.baseline}); Σ IG {float(result.scores.sum()):.4f}; convergence delta {result.delta:.2e} "
             f"({result.relative_delta:.1%} of the difference); {result.steps} steps.")
    if result.relative_delta > 0.05:  # the integral has not converged: the scores do not add up to the change
        stats += f" The delta is large: raise the integration steps (now {result.steps})."
        summary["warning"] = "convergence delta above 5% of f(x) - f(baseline): raise steps"
    body = f'<p class="note">{stats}</p>'
    if result.key == "pixel_values":
        image = _image01(model.processors[name], batch.inputs[name]["pixel_values"][0].cpu())
        scores = result.scores.sum(0).numpy()
        filename = f"ig_{_safe(name)}.png"
        body += writer.figure(render.image_attribution_figure(image, scores), filename,
                              f"{name}: integrated gradients (summed over channels)")
        summary["file"] = filename
    elif result.key == "features":
        features = batch.inputs[name]["features"][0].cpu().numpy()
        frames = int(result.valid.sum()) if result.valid is not None else features.shape[-1]
        filename = f"ig_{_safe(name)}.png"
        body += writer.figure(render.spectrogram_figure(features[:, :frames], result.scores.numpy()[:, :frames]),
                              filename, f"{name}: integrated gradients on the log-mel spectrogram")
        summary["file"] = filename
        summary["frames"] = frames
    elif result.key == "input_values":
        filename = f"ig_{_safe(name)}.png"
        body += writer.figure(render.waveform_figure(result.scores.numpy()), filename,
                              f"{name}: integrated gradients on the waveform")
        summary["file"] = filename
    else:  # text
        valid = result.valid.tolist() if result.valid is not None else [True] * len(result.tokens)
        scores = result.scores.tolist()
        body += render.tokens_html(result.tokens, scores, valid)
        summary["tokens"] = [{"token": t, "score": s} for t, s, v in zip(result.tokens, scores, valid) if v]
    writer.sections.append((f"Integrated gradients: {name} ({result.kind})", body))
    return summary


def _fusion_segments(model: nn.Module, batch: Batch) -> list[tuple[int, str, torch.Tensor]]:
    """(modality index, name, valid token mask [N_m]) of each fusion stream, in the fusion's order."""
    with torch.no_grad():
        views = model.fusion.gather_tokens(model.encode(batch))
    return [(m, model.fusion.modalities[m], mask[0].cpu()) for m, _, mask in views]


def _shares(row: torch.Tensor, segments: list[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """Attention mass of ``row`` (over the concatenated keys) falling on each (name, valid mask) segment."""
    shares, start = {}, 0
    for name, mask in segments:
        shares[name] = float(row[start:start + len(mask)].sum())
        start += len(mask)
    return shares


def _fusion_attention(writer: _Writer, model: nn.Module, batch: Batch, recorder: AttentionRecorder) -> dict[str, Any]:
    maps = recorder.under("fusion.")
    if not maps or model.fusion is None:
        return {}
    segments = _fusion_segments(model, batch)
    fusion = model.config.fusion.name
    out: dict[str, Any] = {"fusion": fusion, "layers": []}
    body = ""
    for index, amap in enumerate(maps):
        parts = amap.module.split(".")
        weights = amap.weights[0].mean(0)  # heads averaged: [Nq, Nk]
        if parts[1] == "blocks":  # transformer fusion: [CLS] + every stream's tokens
            keys = [("CLS", torch.ones(1, dtype=torch.bool))] + [(n, k) for _, n, k in segments]
            queries = keys
        else:  # cross_attention: streams.<m>.<layer>.<cross|self_attn>
            m = int(parts[2])
            own = [(n, k) for i, n, k in segments if i == m]
            queries = own
            keys = own if parts[-1] == "self_attn" else [(n, k) for i, n, k in segments if i != m]
        q_valid, k_valid = torch.cat([k for _, k in queries]), torch.cat([k for _, k in keys])
        if weights.shape != (len(q_valid), len(k_valid)) or not q_valid.any() or not k_valid.any():
            continue
        entry = {"module": amap.module, "queries": [n for n, _ in queries], "keys": [n for n, _ in keys]}
        query_rows = weights[q_valid]
        if parts[1] == "blocks":
            entry["cls_share"] = _shares(weights[0], keys)
        entry["mean_share"] = _shares(query_rows.mean(0), keys)
        shown = weights[q_valid][:, k_valid].numpy()
        filename = f"attention_{index:02d}_{_safe(amap.module)}.png"
        body += writer.figure(
            render.matrix_figure(shown, [(n, int(k.sum())) for n, k in queries], [(n, int(k.sum())) for n, k in keys]),
            filename, f"{amap.module}: attention (mean over heads), real tokens only",
        )
        entry["file"] = filename
        out["layers"].append(entry)
    if fusion == "transformer":
        blocks = [m.weights for m in maps if m.module.split(".")[1] == "blocks"]
        if blocks:
            keys = [("CLS", torch.ones(1, dtype=torch.bool))] + [(n, k) for _, n, k in segments]
            out["rollout_cls_share"] = _shares(attention_rollout(blocks)[0, 0], keys)
    rows = [[e["module"], ", ".join(f"{k}: {v:.3f}" for k, v in e.get("cls_share", e["mean_share"]).items())]
            for e in out["layers"]]
    if "rollout_cls_share" in out:
        rows.append(["rollout over all blocks (CLS)", ", ".join(f"{k}: {v:.3f}" for k, v in out["rollout_cls_share"].items())])
    intro = ('<p class="note">Attention mass per modality (transformer fusion: of the CLS query; cross-attention: '
             "mean over the stream's real queries). Maps show heads averaged, real tokens only.</p>")
    writer.sections.append((f"Fusion attention ({fusion})", intro + render.table_html(["layer", "share"], rows) + body))
    return out


def _encoder_rollouts(writer: _Writer, model: nn.Module, batch: Batch, recorder: AttentionRecorder,
                      given: list[str]) -> dict[str, Any]:
    from ..encoders.hf import HFEncoder
    from ..encoders.image import ImageViT

    out: dict[str, Any] = {}
    for name in given:
        encoder = model.encoders[name]
        if isinstance(encoder, ImageViT):
            layers = [m.weights for m in recorder.under(f"encoders.{name}.")]
        elif isinstance(encoder, HFEncoder) and encoder.kind == "image":
            layers = hf_attentions(encoder, batch.inputs[name])
        else:
            continue
        if not layers:
            continue
        rollout = attention_rollout(layers)[0]
        try:
            patch_map = cls_patch_map(rollout).numpy()
        except ValueError:
            continue
        image = _image01(model.processors[name], batch.inputs[name]["pixel_values"][0].cpu())
        filename = f"rollout_{_safe(name)}.png"
        body = writer.figure(render.rollout_figure(image, patch_map), filename,
                             f"{name}: attention rollout of the CLS token over {patch_map.shape[0]}×{patch_map.shape[1]} patches "
                             f"({len(layers)} layers)")
        writer.sections.append((f"Attention rollout: {name}", body))
        out[name] = {"layers": len(layers), "grid": list(patch_map.shape), "file": filename,
                     "cls_map": patch_map.round(5).tolist()}
    return out


def _shapley_section(writer: _Writer, result: dict[str, Any]) -> None:
    rows = [[name, result["shapley"][name]] for name in result["players"]]
    rows += [["p(target | all given)", result["full"]], [f"p(target | none) ({result['empty_source']})", result["empty"]]]
    subsets = [[" + ".join(s["modalities"]) or "(none)", s["value"]] for s in result["subsets"]]
    body = ('<p class="note">Exact Shapley values over the given modalities of the probability of the target class '
            "(absent modalities removed as in the evaluation report's ablations); they sum to p(all) − p(none).</p>"
            + render.table_html(["modality", "Shapley value"], rows)
            + render.table_html(["coalition", "p(target)"], subsets))
    writer.sections.append(("Modality contribution (Shapley values)", body))


def explain(model_dir: str | os.PathLike | nn.Module, inputs: dict[str, Any], out_dir: str | os.PathLike, *,
            target: str | int | None = None, steps: int = 64, baselines: dict[str, str] | None = None,
            device: str = "cpu", overrides: list[str] | None = None) -> dict[str, Any]:
    """Explain one prediction of a saved classifier; write PNGs, ``index.html`` and ``explanation.json``.

    ``model_dir``: a model or run directory (or a loaded MultimodalModel). ``inputs``: modality name (or kind, when
    the model has one modality of it) → raw input as ``polymodal predict`` takes it (path, array, string).
    ``target``: the label to explain (default: the predicted one). ``steps``: IG integration points.
    ``baselines``: kind → baseline name (image "black" | "mean", audio "zero" | "silence", text "pad").
    ``overrides``: processor options (``--set model.modalities.<name>.processor.<key>=VALUE``).

    Returns the summary also written to explanation.json: prediction, target, per-modality attributions (with
    convergence deltas), fusion attention shares, encoder rollouts, Shapley values and the written ``files``.
    Raises ExplainError for a model of another task than classification (e.g. alignment), an unknown target or
    modality; DataError for unreadable inputs.
    """
    from ..inference.predictor import Predictor

    predictor = Predictor(model_dir, device=device, overrides=overrides)
    if predictor.task_name != "classification":  # the model's recorded task, never its type or attributes
        raise ExplainError(
            f"{predictor.source} is a model of the {predictor.task_name} task (no classifier head to attribute): "
            "explain needs a classification model trained with `polymodal train`"
        )
    model = predictor.model
    try:
        resolved = predictor._resolve(dict(inputs))
    except ValueError as err:
        raise ExplainError(f"explain: {err}") from err
    batch = predictor.make_batch([resolved]).to(device)
    given = [name for name in model.modality_names if bool(batch.present[name][0])]
    with torch.no_grad():
        probs = probabilities(model(batch).logits.float(), model.task)[0].cpu()
    labels = list(model.labels)
    index = resolve_target(target, labels, probs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out)
    summary: dict[str, Any] = {
        "model": str(predictor.source),
        "inputs": {name: str(resolved[name]) if isinstance(resolved[name], (str, os.PathLike)) else type(resolved[name]).__name__
                   for name in given},
        "prediction": {"label": labels[int(probs.argmax())], "probabilities": dict(zip(labels, probs.tolist()))},
        "target": {"label": labels[index], "index": index, "probability": float(probs[index])},
        "attributions": {},
    }
    baselines = dict(baselines or {})
    for name in given:
        kind = model.config.modalities[name].kind
        text = resolved[name] if isinstance(resolved[name], str) and kind == "text" else None
        result = integrated_gradients(model, batch, name, index, baselines.get(kind), steps, text=text)
        summary["attributions"][name] = _attribution_section(writer, model, batch, result)
    with AttentionRecorder(model) as recorder, torch.no_grad():
        model(batch)
    if model.fusion is not None:
        summary["fusion_attention"] = _fusion_attention(writer, model, batch, recorder)
    summary["encoder_rollout"] = _encoder_rollouts(writer, model, batch, recorder, given)
    summary["shapley"] = sample_modality_shapley(model, batch, index)
    _shapley_section(writer, summary["shapley"])
    head = render.table_html(
        ["predicted", "p", "explained target", "p(target)", "modalities given"],
        [[summary["prediction"]["label"], float(probs.max()), labels[index], float(probs[index]), ", ".join(given)]],
    )
    writer.sections.insert(0, ("Prediction", head + '<p class="note">Integrated gradients explain the target '
                               "class's logit; red raises it, blue lowers it.</p>"))
    summary["files"] = [*writer.files, HTML_NAME, JSON_NAME]
    atomic_write_text(out / HTML_NAME, render.page_html(f"Explanation: {labels[index]}", writer.sections))
    atomic_write_text(out / JSON_NAME, json.dumps(summary, indent=2))
    summary["out_dir"] = str(out)
    return summary


__all__ = ["explain", "resolve_target"]
