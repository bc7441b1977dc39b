"""Parity of an ONNX export with PyTorch on real inputs from the built-in spoken-digits data.

:func:`compare` runs the model and its export on the same processed batches (batch 1, batch > 1, and batches where
a modality is absent) and gives the max abs difference of the graph outputs (logits, or embeddings per tower).
:func:`parity_row` builds a tiny model for one fusion / encoder choice, exports it and compares; the test suite
and ``benchmarks/export_parity.py`` enumerate every registered fusion (+ late) and encoder preset with it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import PolymodalError
from .inputs import make_batch
from .onnx import DEFAULT_ATOL, export_onnx
from .runtime import OnnxModel

# Tiny options per encoder preset (seconds to build, trace and run): the parity suite's models. Image inputs are
# the 8×8 digit scans upscaled to 16 px (32 px, RGB for the CLIP tower, whose tiny preset expects that); audio keeps
# every recording's own length (max_seconds None), so the time axis really varies within a batch.
IMAGE_PROCESSOR = {"image_size": 16, "channels": 1}
AUDIO_PROCESSOR = {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 16, "max_seconds": None,
                   "max_seconds_file": 5.0}
TEXT_PROCESSOR = {"max_length": 16, "vocab_size": 512}
TINY_ENCODERS: dict[str, dict[str, Any]] = {
    "image_cnn": {"kind": "image", "options": {"channels": [8, 16]}, "processor": IMAGE_PROCESSOR},
    "image_vit": {"kind": "image", "options": {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4},
                  "processor": IMAGE_PROCESSOR},
    "audio_cnn": {"kind": "audio", "options": {"channels": [8, 16]}, "processor": AUDIO_PROCESSOR},
    "audio_transformer": {"kind": "audio", "options": {"dim": 16, "depth": 1, "heads": 2},
                          "processor": AUDIO_PROCESSOR},
    "text_transformer": {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2}, "processor": TEXT_PROCESSOR},
    "clip_vision": {"kind": "image", "options": {"preset": "tiny"}, "processor": {"image_size": 32, "channels": 3}},
    "clip_text": {"kind": "text", "options": {"preset": "tiny"}, "processor": {"max_length": 16, "vocab_size": 99}},
}
# The encoders a fusion row uses: one per kind, token-level ones so token fusions see real masks.
FUSION_ENCODERS = {"image": "image_vit", "audio": "audio_transformer", "text": "text_transformer"}
KIND_FIELDS = {"image": "image", "audio": "audio", "text": "text"}  # spoken-digits record field per modality kind


def tiny_modality(encoder: str) -> dict[str, Any]:
    """A ModalityConfig-shaped dict for ``encoder`` with the tiny options above."""
    if encoder not in TINY_ENCODERS:
        raise KeyError(f"no tiny parity config for encoder {encoder!r}; known: {sorted(TINY_ENCODERS)}")
    spec = TINY_ENCODERS[encoder]
    return {"kind": spec["kind"], "encoder": encoder, "options": dict(spec["options"]),
            "processor": dict(spec["processor"])}


def builtin_samples(kinds: dict[str, str], count: int, split: str = "test", start: int = 0) -> list[dict[str, Any]]:
    """``count`` raw samples (modality name → the record's image / audio / text) from spoken-digits ``split``,
    the rows ``start`` … ``start + count - 1`` of a spread over the whole split (its rows are ordered by digit)."""
    from ...data import get_dataset

    rows = get_dataset("spoken-digits").records(split)
    step = max(1, len(rows) // max(1, start + count))
    records = [rows[(start + i) * step] for i in range(count) if (start + i) * step < len(rows)]
    return [{name: record[KIND_FIELDS[kind]] for name, kind in kinds.items()} for record in records]


def parity_sample_sets(kinds: dict[str, str], split: str = "test") -> dict[str, list[dict[str, Any]]]:
    """Named sample sets: batch 1, batch 5, and (with ≥ 2 modalities) batch 5 where each sample lacks one modality
    in turn (a tower: batch 3 with its second sample absent)."""
    names = list(kinds)
    sets = {"batch 1": builtin_samples(kinds, 1, split), "batch 5": builtin_samples(kinds, 5, split, start=1)}
    missing = builtin_samples(kinds, 5 if len(names) > 1 else 3, split, start=6)
    if len(names) > 1:
        for row, sample in enumerate(missing):
            sample[names[row % len(names)]] = None
        sets["batch 5, one modality missing per sample"] = missing
    else:
        missing[1][names[0]] = None
        sets["batch 3, one sample absent"] = missing
    return sets


@torch.no_grad()
def _torch_outputs(model: nn.Module, entry: str, batch: Any) -> torch.Tensor:
    return model(batch).logits if entry == "classifier" else model.encode(batch, entry)


def compare(model: nn.Module, export_dir: str | os.PathLike, split: str = "test") -> dict[str, Any]:
    """Max abs difference between ``model`` and its export over :func:`parity_sample_sets`, per graph and set:
    ``{"max_abs_diff": float, "per_graph": {entry: {set name: float}}}``."""
    runtime = OnnxModel(export_dir, threads=1)
    model = model.eval()
    per_graph: dict[str, dict[str, float]] = {}
    for entry, graph in runtime.graphs.items():
        kinds = {name: model.config.modalities[name].kind for name in graph["modalities"]}
        per_graph[entry] = {}
        for label, samples in parity_sample_sets(kinds, split).items():
            batch = make_batch(model.processors, list(kinds), samples)
            expected = _torch_outputs(model, entry, batch)
            got = runtime._run(entry, batch)
            per_graph[entry][label] = float((got - expected).abs().max())
    worst = max((v for sets in per_graph.values() for v in sets.values()), default=0.0)
    return {"max_abs_diff": worst, "per_graph": per_graph}


def build_tiny_model(modalities: dict[str, dict[str, Any]], fusion: str = "concat", alignment: bool = False,
                     seed: int = 0, finetune: str | None = None) -> nn.Module:
    """A randomly initialised classifier (10 digit labels) or alignment model over ``modalities``; ``finetune``
    (lora, ia3, prompt, ...) injects that strategy and perturbs its new weights (LoRA starts as a no-op)."""
    from ...config import ModelConfig, from_dict

    if any(spec.get("encoder", "").startswith("clip_") for spec in modalities.values()):
        from ...encoders import clip  # noqa: F401  (registers clip_vision / clip_text)
    torch.manual_seed(seed)
    if alignment:
        from ...models.aligner import AlignmentConfig, AlignmentModel

        return AlignmentModel(from_dict(AlignmentConfig, {"modalities": modalities, "embed_dim": 16})).eval()
    from ...models import MultimodalModel

    config = from_dict(ModelConfig, {"modalities": modalities, "fusion": {"name": fusion, "dim": 16},
                                     "head": {"labels": [str(d) for d in range(10)]}})
    model = MultimodalModel(config)
    if finetune:
        from ...peft import apply_finetune

        apply_finetune(model, {"default": finetune})
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.requires_grad and name.startswith("encoders."):
                    param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def parity_row(name: str, modalities: dict[str, dict[str, Any]], fusion: str = "concat", alignment: bool = False,
               atol: float = DEFAULT_ATOL, work_dir: str | os.PathLike | None = None,
               finetune: str | None = None) -> dict[str, Any]:
    """Build, export and compare one tiny model: ``{"name", "exported", "max_abs_diff", "ok", "why", "seconds"}``.
    A part that cannot export gives ``exported`` False and the ExportError's message as ``why``."""
    started = time.perf_counter()
    row: dict[str, Any] = {"name": name, "fusion": None if alignment else fusion,
                           "encoders": {m: spec.get("encoder", "auto") for m, spec in modalities.items()},
                           "exported": False, "max_abs_diff": None, "ok": False, "why": ""}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        try:
            model = build_tiny_model(modalities, fusion, alignment, finetune=finetune)
            export_onnx(model, Path(tmp) / "onnx", atol=atol)
            row["exported"] = True
            result = compare(model, Path(tmp) / "onnx")
        except PolymodalError as err:
            row["why"] = str(err)
        else:
            row["max_abs_diff"] = result["max_abs_diff"]
            row["per_graph"] = result["per_graph"]
            row["ok"] = result["max_abs_diff"] <= atol
            if not row["ok"]:
                row["why"] = f"max abs diff {result['max_abs_diff']:.3g} > {atol:g} on built-in inputs"
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def parity_cases() -> list[dict[str, Any]]:
    """Every registered fusion (+ late) over image + audio + text, every encoder preset next to a text modality
    (so one modality can be missing), the parameter-efficient fine-tuning methods that add modules (LoRA, IA3,
    prompt tuning) and an alignment model: ``parity_row`` keyword arguments."""
    from ... import fusion as _fusion  # noqa: F401  (registers every fusion)
    from ...registry import FUSIONS

    trio = {kind: tiny_modality(encoder) for kind, encoder in FUSION_ENCODERS.items()}
    cases = [{"name": f"fusion {f}", "modalities": trio, "fusion": f} for f in [*FUSIONS.names(), "late"]]
    for encoder, spec in TINY_ENCODERS.items():
        partner = "image" if spec["kind"] == "text" else "text"
        modalities = {spec["kind"]: tiny_modality(encoder), partner: tiny_modality(FUSION_ENCODERS[partner])}
        cases.append({"name": f"encoder {encoder}", "modalities": modalities, "fusion": "concat"})
    pair = {"image": tiny_modality("image_vit"), "text": tiny_modality("text_transformer")}
    cases += [{"name": f"finetune {method}", "modalities": pair, "fusion": "transformer", "finetune": method}
              for method in ("lora", "ia3", "prompt")]
    cases.append({"name": "alignment towers image_cnn + audio_transformer + text_transformer", "alignment": True,
                  "modalities": {"image": tiny_modality("image_cnn"), "audio": tiny_modality("audio_transformer"),
                                 "text": tiny_modality("text_transformer")}})
    return cases
