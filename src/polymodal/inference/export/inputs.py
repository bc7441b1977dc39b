"""Inputs for tracing and checking an exported graph, and the processors' settings written next to it.

Tracing needs example tensors; checking needs *other* tensors (another batch size, other lengths, absent
modalities), because the tracer records one path through the Python code and only different inputs show whether
that path holds for them. Both are made here from synthetic raw inputs run through the model's own processors,
so exporting needs no data set. (:mod:`.parity` checks against real inputs from the built-in data.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ...types import Batch


def sample_rate_of(processor: Any) -> int:
    """The rate an audio processor resamples to (its raw waveform inputs are made at this rate)."""
    rate = getattr(processor, "sample_rate", None) or getattr(getattr(processor, "loader", None), "sample_rate", None)
    return int(rate or 16000)


def synthetic_raw(kind: str, processor: Any, variant: int) -> Any:
    """A raw input of ``kind`` the processor accepts; ``variant`` changes its content and length."""
    rng = np.random.default_rng(1234 + variant)
    if kind == "image":
        return rng.integers(0, 256, (12 + 2 * variant, 10 + variant), dtype=np.uint8)
    if kind == "audio":
        rate = sample_rate_of(processor)
        seconds = (0.55, 0.3, 0.8, 0.42)[variant % 4]
        t = np.arange(int(rate * seconds), dtype=np.float32) / rate
        wave = 0.3 * np.sin(2 * np.pi * (220 + 60 * variant) * t) + 0.05 * rng.standard_normal(t.shape)
        return wave.astype(np.float32), rate
    if kind == "text":
        texts = ["a handwritten seven", "someone says nine twice over and again", "three", "the digit two is drawn"]
        return texts[variant % len(texts)]
    raise ValueError(f"unknown modality kind {kind!r}")


def make_batch(processors: dict[str, Any], names: list[str], samples: list[dict[str, Any]]) -> Batch:
    """Raw samples (modality name → raw input, or missing / None = absent) → a Batch, as the Predictor builds it:
    absent modalities get the processor's ``empty()`` placeholder and ``present`` False."""
    inputs, present = {}, {}
    for name in names:
        processor = processors[name]
        items, flags = [], []
        for sample in samples:
            raw = sample.get(name)
            items.append(processor.empty() if raw is None else processor(raw))
            flags.append(raw is not None)
        inputs[name] = processor.collate(items)
        present[name] = torch.tensor(flags, dtype=torch.bool)
    return Batch(inputs=inputs, present=present, ids=[str(i) for i in range(len(samples))])


def trace_samples(kinds: dict[str, str], processors: dict[str, Any]) -> list[dict[str, Any]]:
    """Two samples with every modality present and different lengths: a batch > 1 keeps the batch axis symbolic
    and real masks keep the masking ops in the graph."""
    return [{name: synthetic_raw(kind, processors[name], v) for name, kind in kinds.items()} for v in (0, 1)]


def check_sample_sets(kinds: dict[str, str], processors: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Sample sets unlike the trace: three samples (all modalities; the first one absent; only the first one, so
    with one modality the second sample has none, as a tower graph may get), then a single sample."""
    names = list(kinds)
    mixed = [{name: synthetic_raw(kind, processors[name], 2 + row) for name, kind in kinds.items()} for row in range(3)]
    mixed[1][names[0]] = None
    for name in names[1:]:
        mixed[2][name] = None
    single = [{name: synthetic_raw(kind, processors[name], 3) for name, kind in kinds.items()}]
    return [mixed, single]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # not plain data (a tokenizer object): described elsewhere


# Attributes a processor resolves from its options (defaults, checkpoint files), which a non-Python runtime needs.
RESOLVED_ATTRIBUTES = ("image_size", "resize_size", "channels", "mean", "std", "value_scale", "sample_rate", "n_mels",
                       "win_length", "num_frames", "max_length", "vocab_size", "pad_token_id")


def processor_settings(name: str, kind: str, processor: Any) -> dict[str, Any]:
    """What a runtime without Python needs to reproduce ``processor``: its options, the values it resolved, and the
    tensors it emits per sample (and for an absent sample)."""
    config = getattr(processor, "config", None)
    options = _jsonable(dataclasses.asdict(config)) if dataclasses.is_dataclass(config) else {}
    resolved = {attr: _jsonable(getattr(processor, attr)) for attr in RESOLVED_ATTRIBUTES if hasattr(processor, attr)}
    empty = processor.empty()
    settings: dict[str, Any] = {
        "kind": kind,
        "processor": type(processor).__name__,
        "options": options,
        "resolved": {k: v for k, v in resolved.items() if v is not None or k == "num_frames"},
        "outputs": {key: {"dtype": str(t.dtype).removeprefix("torch."), "per_sample_shape": list(t.shape)}
                    for key, t in processor(synthetic_raw(kind, processor, 0)).items()},
        "empty": {key: {"shape": list(t.shape), "fill": t.flatten()[0].item() if t.numel() else None}
                  for key, t in empty.items()},
        "pad_values": _jsonable(dict(processor.pad_values)),
    }
    if kind == "image":
        settings["steps"] = ("decode (EXIF orientation, alpha over white) → resize (resize_mode, resample) → center "
                             "crop image_size → pixels in [0, 1] × value_scale → (x - mean) / std, channels first")
    elif kind == "audio" and type(processor).__name__ == "AudioProcessor":
        settings["steps"] = ("mono → resample to sample_rate → crop max_seconds → log-mel (n_fft, win_length, "
                             "hop_length, n_mels, f_min, f_max) → normalize → pad to num_frames; feature_mask marks "
                             "real frames")
    elif kind == "text" and type(processor).__name__ == "BuiltinTextProcessor":
        from ...data import text as builtin_text

        settings["special_ids"] = {"pad": builtin_text.PAD_ID, "cls": builtin_text.CLS_ID, "sep": builtin_text.SEP_ID,
                                   "unk": builtin_text.UNK_ID}
        settings["steps"] = ("words: lowercase, split by regex \\w+|[^\\w\\s], id = 4 + crc32(utf-8 word) % (vocab_size"
                             " - 4); bytes: id = 4 + byte. Then [cls] + ids[:max_length - 2] + [sep], attention_mask 1"
                             " per token; batches pad with pad id / mask 0")
    if getattr(processor, "save_pretrained", None) and type(processor).__name__.startswith("HF"):
        settings["files"] = f"hf/{name}"  # tokenizer / feature extractor files, copied next to the graphs
    return settings
