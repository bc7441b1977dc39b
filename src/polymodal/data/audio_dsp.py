"""Audio signal processing in torch: band-limited resampling, log-mel spectrogram, SpecAugment masks.

No torchaudio: resampling is windowed-sinc polyphase filtering (the same scheme as torchaudio's
``sinc_interp_hann``) done with one ``conv1d``; the mel filterbank comes from ``transformers.audio_utils``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zeros: int, rolloff: float) -> tuple[Tensor, int]:
    """Polyphase kernels [new, 1, K] for reduced rates orig → new, and the half width in input samples."""
    base = min(orig, new) * rolloff  # low-pass cut-off (in units of the reduced rate), below both Nyquists
    half = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-half, half + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx) * base
    t = t.clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2  # Hann window over ±width_zeros zero crossings
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (base / orig)).to(torch.float32), half


def resample(wave: Tensor, orig_sr: int, new_sr: int, width_zeros: int = 6, rolloff: float = 0.99) -> Tensor:
    """Band-limited resampling. wave [..., S] float → [..., ceil(S * new_sr / orig_sr)]."""
    if orig_sr == new_sr:
        return wave
    gcd = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // gcd, int(new_sr) // gcd
    kernel, half = _sinc_kernel(orig, new, width_zeros, rolloff)
    shape = wave.shape
    flat = wave.reshape(-1, 1, shape[-1]).to(torch.float32)
    flat = F.pad(flat, (half, half + orig))
    out = F.conv1d(flat, kernel.to(flat.device), stride=orig)  # [N, new, frames]: one phase per output slot
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * shape[-1] / orig)
    return out[:, :target].reshape(*shape[:-1], target)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """Slaney-style mel filterbank (librosa's default) [n_fft // 2 + 1, n_mels] float32."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(bank, dtype=np.float32))


def log_mel_spectrogram(
    wave: Tensor,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    win_length: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """wave [S] float → natural-log mel power spectrogram [n_mels, 1 + S // hop_length].

    Centred frames (reflect padding), periodic Hann window of ``win_length`` zero-padded to ``n_fft``.
    """
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float32)
    pad_mode = "reflect" if wave.shape[-1] > n_fft // 2 else "constant"  # reflect needs enough samples
    spec = torch.stft(
        wave.to(torch.float32),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # [n_fft // 2 + 1, T]
    bank = mel_filterbank(sample_rate, n_fft, n_mels, float(f_min), float(f_max or sample_rate / 2))
    return torch.log(bank.T @ power + eps)


def spec_augment(
    features: Tensor,
    valid_frames: int,
    freq_masks: int,
    freq_width: int,
    time_masks: int,
    time_width: int,
    value: float = 0.0,
) -> Tensor:
    """SpecAugment (Park et al. 2019) without time warping. features [F, T] → a masked copy.

    Time masks are drawn inside the first ``valid_frames`` frames (masking padding would teach nothing).
    """
    out = features.clone()
    n_freq = out.shape[0]
    for _ in range(freq_masks):
        width = int(torch.randint(0, freq_width + 1, ()))
        if 0 < width < n_freq:
            start = int(torch.randint(0, n_freq - width + 1, ()))
            out[start : start + width, :] = value
    for _ in range(time_masks):
        width = min(int(torch.randint(0, time_width + 1, ())), valid_frames // 5)  # at most 20% per mask
        if width > 0:
            start = int(torch.randint(0, valid_frames - width + 1, ()))
            out[:, start : start + width] = value
    return out
