"""Seeded input corruptions for robustness curves. Pure functions: nothing is modified in place.

Two levels, because some corruptions are only honest before processing:

- batch level: on the processed tensors of a Batch, so they work for any model — image Gaussian noise and
  Gaussian blur on ``pixel_values`` [B, C, H, W]; text token dropout on ``input_ids`` / ``attention_mask``
  [B, L]; audio noise on raw-waveform inputs ``input_values`` [B, S] (HF audio models).
- raw level: audio noise at a target SNR is added to the WAVEFORM (:func:`corrupt_raw_audio`), before the
  log-mel. Adding noise to log-mel ``features`` would not be additive noise at that SNR (the log warps it),
  so :func:`apply_corruption` refuses log-mel audio and asks for raw rows instead.

Severity: every named corruption in :data:`CORRUPTIONS` takes a severity s in [0, 5] (ImageNet-C style);
s = 0 is always the identity. Mapping to the physical parameter:

| name           | modality kind | parameter                                              |
|----------------|---------------|--------------------------------------------------------|
| gaussian_noise | image         | noise σ = 0.2·s × the image's own std (s=5: σ = std)   |
| gaussian_blur  | image         | kernel σ = 0.5·s pixels                                |
| audio_noise    | audio         | white noise at SNR = 50 − 10·s dB (s=5: 0 dB)          |
| token_dropout  | text          | drop a fraction 0.1·s of the non-pad, non-special tokens |
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..types import Batch

# ---------------------------------------------------------------------------------------------- image


def gaussian_noise(pixel_values: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Add N(0, (sigma · std_i)²) per image i, std_i its own standard deviation (scale-free under normalisation).

    pixel_values [B, C, H, W] (or [C, H, W]) → same shape.
    """
    if sigma <= 0:
        return pixel_values.clone()
    x = pixel_values.float()
    flat = x.reshape(x.shape[0], -1) if x.dim() == 4 else x.reshape(1, -1)
    std = flat.std(dim=1).clamp_min(1e-8).view(-1, *([1] * (x.dim() - 1)))
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + sigma * std * noise).to(pixel_values.dtype)


def gaussian_kernel1d(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian [2r + 1], radius r = ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(pixel_values: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with kernel std ``sigma`` pixels (depthwise conv, replicate padding).

    pixel_values [B, C, H, W] (or [C, H, W]) → same shape. Replicate padding works for any image size
    (reflect padding fails when the kernel radius exceeds the image, e.g. 8×8 digits).
    """
    if sigma <= 0:
        return pixel_values.clone()
    squeeze = pixel_values.dim() == 3
    x = pixel_values.float().unsqueeze(0) if squeeze else pixel_values.float()
    b, c, h, w = x.shape
    kernel = gaussian_kernel1d(sigma)
    r = kernel.numel() // 2
    x = x.reshape(b * c, 1, h, w)
    x = torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))
    x = torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))
    out = x.reshape(b, c, h, w).to(pixel_values.dtype)
    return out[0] if squeeze else out


# ---------------------------------------------------------------------------------------------- audio


def add_noise_at_snr(
    waveform: Tensor, snr_db: float, generator: torch.Generator | None = None, mask: Tensor | None = None
) -> Tensor:
    """Add white Gaussian noise so that 10·log10(P_signal / P_noise) = ``snr_db`` exactly, per row.

    waveform [S] or [B, S]; mask (same shape, True = real sample) limits both the power estimate and the
    noise to real samples (padding stays silent). The drawn noise is rescaled to the exact target power, so
    the realised SNR equals the target. A silent row (zero power) is returned unchanged: its SNR is undefined.
    ``snr_db = inf`` is the identity.
    """
    if math.isinf(snr_db) and snr_db > 0:
        return waveform.clone()
    squeeze = waveform.dim() == 1
    x = waveform.float().unsqueeze(0) if squeeze else waveform.float()
    real = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.reshape(x.shape).bool()
    weight = real.float()
    count = weight.sum(dim=1, keepdim=True).clamp_min(1.0)
    signal_power = (x**2 * weight).sum(dim=1, keepdim=True) / count
    noise = torch.randn(x.shape, generator=generator) * weight
    noise_power = (noise**2).sum(dim=1, keepdim=True) / count
    target_power = signal_power / (10.0 ** (snr_db / 10.0))
    scale = torch.sqrt(target_power / noise_power.clamp_min(1e-20))
    out = x + noise * scale
    out = out.to(waveform.dtype)
    return out[0] if squeeze else out


def measured_snr_db(clean: Tensor | np.ndarray, noisy: Tensor | np.ndarray) -> float:
    """10·log10(P_clean / P_(noisy − clean)) of one signal (any shape)."""
    clean_t, noisy_t = torch.as_tensor(np.asarray(clean, dtype=np.float64)), torch.as_tensor(np.asarray(noisy, dtype=np.float64))
    noise_power = ((noisy_t - clean_t) ** 2).mean()
    return float(10 * torch.log10((clean_t**2).mean() / noise_power))


def corrupt_raw_audio(raw: Any, snr_db: float, seed: int = 0) -> Any:
    """Noise at ``snr_db`` on a raw audio input, before any processing.

    raw: a file path → returns (float32 array [S] or [S, channels], sample_rate); (array, sample_rate) →
    (noisy array, sample_rate); a bare array / tensor → a noisy float32 array. All three are inputs the audio
    processors accept. Multi-channel audio gets noise at the target SNR on each channel.
    """
    import soundfile as sf

    rate = None
    if isinstance(raw, (str, os.PathLike)):
        try:
            array, rate = sf.read(str(raw), dtype="float32", always_2d=False)
        except Exception as err:
            raise ValueError(f"audio file {str(raw)!r} cannot be decoded for corruption: {err}") from err
    elif isinstance(raw, tuple) and len(raw) == 2:
        array, rate = np.asarray(raw[0]), raw[1]
    elif isinstance(raw, (np.ndarray, Tensor)):
        array = np.asarray(raw)
    else:
        raise ValueError(f"audio input must be a path, (array, sample_rate) or an array, got {type(raw).__name__}")
    wave = torch.as_tensor(np.asarray(array, dtype=np.float32))
    generator = torch.Generator().manual_seed(int(seed))
    # [S, channels] → noise per channel: rows of the transposed array are channels.
    noisy = add_noise_at_snr(wave.T.contiguous(), snr_db, generator).T if wave.dim() == 2 else add_noise_at_snr(wave, snr_db, generator)
    noisy_np = noisy.numpy().astype(np.float32)
    return noisy_np if rate is None else (noisy_np, int(rate))


# ---------------------------------------------------------------------------------------------- text


def token_dropout(
    input_ids: Tensor,
    attention_mask: Tensor,
    fraction: float,
    generator: torch.Generator | None = None,
    pad_token_id: int = 0,
    protected_ids: Iterable[int] = (),
) -> tuple[Tensor, Tensor]:
    """Remove a ``fraction`` of each row's real tokens (attention_mask 1), never ``protected_ids`` (specials).

    input_ids / attention_mask [B, L] → same shapes: kept tokens shift left in order, freed positions become
    ``pad_token_id`` with mask 0. The number dropped per row is round(fraction × droppable tokens).
    """
    if fraction <= 0:
        return input_ids.clone(), attention_mask.clone()
    real = attention_mask.bool()
    droppable = real.clone()
    for token in protected_ids:
        droppable &= input_ids != int(token)
    scores = torch.rand(input_ids.shape, generator=generator)
    scores = scores.masked_fill(~droppable, 2.0)  # never chosen
    n_drop = torch.round(droppable.sum(1).float() * min(fraction, 1.0)).long()
    ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of each position's score within its row
    keep = real & ~(ranks < n_drop.unsqueeze(1))
    # Stable sort on "not kept" moves kept tokens to the front in their original order.
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)
    new_ids = input_ids.gather(1, order)
    new_keep = keep.gather(1, order)
    new_ids = new_ids.masked_fill(~new_keep, pad_token_id)
    return new_ids, new_keep.to(attention_mask.dtype)


# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Corruption:
    """A named corruption: ``kind`` is the modality kind it applies to; ``parameter(s)`` maps severity s."""

    name: str
    kind: str
    parameter: Callable[[float], float]
    description: str
    raw_level: bool = False  # True: applied to raw inputs (waveforms) before processing when possible


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": Corruption("gaussian_noise", "image", lambda s: 0.2 * s, "noise sigma = 0.2*s x image std"),
    "gaussian_blur": Corruption("gaussian_blur", "image", lambda s: 0.5 * s, "blur kernel sigma = 0.5*s pixels"),
    "audio_noise": Corruption(
        "audio_noise", "audio", lambda s: math.inf if s <= 0 else 50.0 - 10.0 * s, "white noise at SNR = 50-10*s dB", True
    ),
    "token_dropout": Corruption("token_dropout", "text", lambda s: min(0.1 * s, 1.0), "drop fraction 0.1*s of tokens"),
}


def get_corruption(corruption: str | Corruption) -> Corruption:
    if isinstance(corruption, Corruption):
        return corruption
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {sorted(CORRUPTIONS)}")
    return CORRUPTIONS[corruption]


def apply_corruption(
    batch: Batch,
    corruption: str | Corruption,
    severity: float,
    modality: str,
    seed: int = 0,
    pad_token_id: int = 0,
    protected_ids: Iterable[int] = (),
) -> Batch:
    """A new Batch whose ``modality`` tensors are corrupted at ``severity`` (samples lacking it are untouched)."""
    spec = get_corruption(corruption)
    if modality not in batch.inputs:
        raise ValueError(f"batch has no modality {modality!r}; it has {batch.modalities}")
    inputs = dict(batch.inputs[modality])
    present = batch.present[modality]
    generator = torch.Generator().manual_seed(int(seed))
    value = spec.parameter(severity)
    def only_present(new: Tensor, old: Tensor) -> Tensor:
        keep = present.bool().view(-1, *([1] * (old.dim() - 1)))
        return torch.where(keep, new, old)

    if spec.name in ("gaussian_noise", "gaussian_blur"):
        _require(inputs, "pixel_values", spec, modality)
        old = inputs["pixel_values"]
        new = gaussian_noise(old, value, generator) if spec.name == "gaussian_noise" else gaussian_blur(old, value)
        inputs["pixel_values"] = only_present(new, old)
    elif spec.name == "token_dropout":
        _require(inputs, "input_ids", spec, modality)
        ids, mask = token_dropout(
            inputs["input_ids"], inputs["attention_mask"], value, generator, pad_token_id, protected_ids
        )
        inputs["input_ids"] = only_present(ids, inputs["input_ids"])
        inputs["attention_mask"] = only_present(mask, inputs["attention_mask"])
    elif spec.name == "audio_noise":
        if "input_values" not in inputs:
            raise ValueError(
                f"audio_noise on modality {modality!r}: the batch holds processed features {sorted(inputs)}, and "
                "noise at a target SNR must be added to the waveform; pass raw rows (evaluate_corruptions(model, "
                "rows, ...)) or use corrupt_raw_audio"
            )
        old = inputs["input_values"]
        mask = inputs.get("attention_mask")
        inputs["input_values"] = only_present(add_noise_at_snr(old, value, generator, mask), old)
    else:
        raise ValueError(f"corruption {spec.name!r} has no batch-level implementation")
    new_inputs = dict(batch.inputs)
    new_inputs[modality] = inputs
    return Batch(inputs=new_inputs, present=dict(batch.present), labels=batch.labels, ids=list(batch.ids))


def _require(inputs: dict[str, Tensor], key: str, spec: Corruption, modality: str) -> None:
    if key not in inputs:
        raise ValueError(f"{spec.name} needs {key!r} in modality {modality!r}; the batch has {sorted(inputs)}")


def corrupt_rows(
    rows: list[dict[str, Any]], corruption: str | Corruption, severity: float, modality: str, seed: int = 0
) -> list[dict[str, Any]]:
    """Raw-level corruption of manifest-style rows (copies; rows without the modality are kept as they are).

    Only raw-level corruptions (audio_noise) are defined here; each row gets its own seed (seed + row index).
    """
    spec = get_corruption(corruption)
    if spec.name != "audio_noise":
        raise ValueError(f"{spec.name} is applied to processed batches (apply_corruption), not raw rows")
    value = spec.parameter(severity)
    out = []
    for i, row in enumerate(rows):
        new = dict(row)
        if row.get(modality) is not None and value != math.inf:
            try:
                new[modality] = corrupt_raw_audio(row[modality], value, seed + i)
            except ValueError as err:
                raise ValueError(f"row {i} (id {row.get('id', i)!r}), column {modality!r}: {err}") from err
        out.append(new)
    return out


__all__ = [
    "gaussian_noise",
    "gaussian_blur",
    "gaussian_kernel1d",
    "add_noise_at_snr",
    "measured_snr_db",
    "corrupt_raw_audio",
    "token_dropout",
    "Corruption",
    "CORRUPTIONS",
    "get_corruption",
    "apply_corruption",
    "corrupt_rows",
]
