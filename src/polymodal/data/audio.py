"""Audio processors: path / (array, sample_rate) / 1-D array → log-mel ``features`` [n_mels, T] + ``feature_mask`` [T].

Pipeline: header check (duration cap before decoding) → decode (soundfile) → mono mix → resample to
``sample_rate`` → crop to ``max_seconds`` (``crop="start"`` keeps the beginning, ``"center"`` the middle;
with augment, an optional random time shift) → log-mel (torch.stft + Slaney mel filterbank) → normalise →
right-pad the frames to the fixed length of ``max_seconds`` (padding frames are 0 and ``feature_mask`` False;
``feature_mask`` is True exactly for frames computed from real audio) → SpecAugment when augment=True.

With ``pretrained`` set (AST, Wav2Vec2, Whisper-style checkpoints) the checkpoint's own feature extractor is
used instead and its tensors (``input_values`` / ``input_features``, ``attention_mask``) are returned.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from ..config import ModalityConfig, bounds
from .audio_dsp import log_mel_spectrogram, resample, spec_augment
from .errors import DataError
from .processors import Processor, parse_options


@dataclass
class AudioProcessorConfig:
    sample_rate: int = 16000  # everything is resampled to this rate
    max_seconds: float | None = 10.0  # crop / pad to this length; None = keep full length (collate pads)
    max_seconds_file: float = 600.0  # longer files are refused from their header, before decoding
    crop: Literal["start", "center"] = "start"  # which part of a too-long clip to keep
    n_mels: int = 64
    n_fft: int = 400
    win_length: int | None = None  # None = n_fft
    hop_length: int = 160
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2
    normalize: Literal["utterance", "global", "none"] = "utterance"
    global_mean: float = 0.0  # used by normalize="global"
    global_std: float = 1.0
    # augmentation (only when called with augment=True)
    freq_masks: int = 2
    freq_mask_width: int = 8  # mel bins, max per mask
    time_masks: int = 2
    time_mask_width: int = 10  # frames, max per mask (also capped at 20% of the real frames)
    gain_db: float = 0.0  # random gain in ±gain_db (before the log-mel)
    time_shift_seconds: float = 0.0  # random leading silence in [0, time_shift_seconds]

    # Valid ranges, checked when the config is read (ConfigError names model.modalities.<name>.processor.<key>).
    CONFIG_BOUNDS = {
        **{key: bounds(ge=1) for key in ("sample_rate", "n_mels", "n_fft", "win_length", "hop_length")},
        **{key: bounds(gt=0) for key in ("max_seconds", "max_seconds_file", "f_max", "global_std")},
        **{key: bounds(ge=0) for key in ("f_min", "freq_masks", "freq_mask_width", "time_masks", "time_mask_width",
                                         "gain_db", "time_shift_seconds")},
    }


# ---------------------------------------------------------------------------------------------- decoding


def _describe(raw: Any) -> str:
    return repr(str(raw)) if isinstance(raw, (str, os.PathLike)) else type(raw).__name__


def check_audio_file(path: str | os.PathLike, max_seconds_file: float) -> sf._SoundFileInfo:
    """Header-only check: the file exists, soundfile can parse it, it is non-empty and not too long."""
    if not Path(path).is_file():
        raise DataError(f"audio file {str(path)!r} does not exist")
    try:
        info = sf.info(str(path))
    except Exception as err:
        raise DataError(f"audio file {str(path)!r} is not readable audio: {err}") from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise DataError(f"audio file {str(path)!r} holds no samples")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds_file:
        raise DataError(
            f"audio file {str(path)!r} lasts {seconds:.1f} s, over the cap max_seconds_file={max_seconds_file} "
            "(set processor.max_seconds_file to allow it)"
        )
    return info


def _to_float_mono(array: np.ndarray) -> np.ndarray:
    """Integer PCM → [-1, 1] float32; (S, C) or (C, S) with the channels on the short axis → mono mean."""
    array = np.asarray(array)
    if array.ndim not in (1, 2):
        raise DataError(f"audio array must be 1-D (samples) or 2-D (samples, channels), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype == np.uint8:
            array = (array.astype(np.float32) - 128.0) / 128.0
        else:
            array = array.astype(np.float32) / float(-np.iinfo(array.dtype).min)
    elif not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"audio array dtype {array.dtype} is not numeric")
    if array.ndim == 2:
        array = array.mean(axis=1 if array.shape[1] <= array.shape[0] else 0)
    return array.astype(np.float32, copy=False)


class _WaveformLoader:
    """Shared decode → mono → resample → crop logic of both audio processors."""

    def __init__(self, sample_rate: int, max_seconds: float | None, max_seconds_file: float, crop: str):
        self.sample_rate = sample_rate
        self.max_samples = None if max_seconds is None else int(round(max_seconds * sample_rate))
        self.max_seconds = max_seconds
        self.max_seconds_file = max_seconds_file
        self.crop = crop

    def check(self, raw: Any) -> None:
        if isinstance(raw, (str, os.PathLike)):
            check_audio_file(raw, self.max_seconds_file)
        else:
            array, rate = self._unpack(raw)
            wave = _to_float_mono(array)
            if wave.size == 0:
                raise DataError("audio array is empty")
            if wave.shape[0] / rate > self.max_seconds_file:
                raise DataError(
                    f"audio array lasts {wave.shape[0] / rate:.1f} s, over max_seconds_file={self.max_seconds_file}"
                )

    def _unpack(self, raw: Any) -> tuple[np.ndarray, int]:
        if isinstance(raw, tuple) and len(raw) == 2:
            wave, rate = raw
            if not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise DataError(f"audio (array, sample_rate): sample_rate must be a positive int, got {rate!r}")
            return np.asarray(wave), int(rate)
        if isinstance(raw, (np.ndarray, torch.Tensor)):
            return np.asarray(raw), self.sample_rate
        raise DataError(f"audio input must be a path, (array, sample_rate) or a 1-D array, got {type(raw).__name__}")

    def load(self, raw: Any) -> Tensor:
        """Any accepted input → mono float32 waveform [S] at ``sample_rate``, cropped to ``max_seconds``."""
        if isinstance(raw, (str, os.PathLike)):
            info = check_audio_file(raw, self.max_seconds_file)
            start, frames = self._crop_window(info.frames, info.samplerate)
            try:  # read only the window we keep: long files cost no more than short ones
                data, rate = sf.read(str(raw), start=start, frames=frames, dtype="float32", always_2d=True)
            except Exception as err:
                raise DataError(f"audio file {str(raw)!r} cannot be decoded: {err}") from err
            wave = data.mean(axis=1)
        else:
            array, rate = self._unpack(raw)
            wave = _to_float_mono(array)
            start, frames = self._crop_window(wave.shape[0], rate)
            wave = wave[start : start + frames] if frames > 0 else wave[start:]
        if wave.size == 0:
            raise DataError(f"audio input {_describe(raw)} holds no samples")
        if not np.isfinite(wave).all():
            raise DataError(f"audio input {_describe(raw)} contains NaN or infinite samples")
        tensor = resample(torch.from_numpy(np.ascontiguousarray(wave)), rate, self.sample_rate)
        if self.max_samples is not None:
            tensor = tensor[: self.max_samples]  # resampling rounds up; keep the exact target length
        return tensor

    def _crop_window(self, total: int, rate: int) -> tuple[int, int]:
        """(start, frames) in the source rate; frames = -1 means to the end."""
        if self.max_seconds is None:
            return 0, -1
        keep = math.ceil(self.max_seconds * rate)
        if total <= keep:
            return 0, -1
        start = (total - keep) // 2 if self.crop == "center" else 0
        return start, keep


def _augment_wave(wave: Tensor, gain_db: float, shift_seconds: float, sample_rate: int) -> Tensor:
    if gain_db > 0:
        wave = wave * 10 ** (float(torch.empty(()).uniform_(-gain_db, gain_db)) / 20)
    if shift_seconds > 0:
        shift = int(torch.randint(0, int(shift_seconds * sample_rate) + 1, ()))
        wave = torch.cat([wave.new_zeros(shift), wave])
    return wave


# ---------------------------------------------------------------------------------------------- log-mel


class AudioProcessor(Processor):
    """Log-mel processor for the from-scratch audio encoders. Output ``features`` [n_mels, T] float32,
    ``feature_mask`` [T] bool; T = 1 + max_samples // hop_length (or the clip's own frames if max_seconds=None).
    """

    kind = "audio"
    pad_values = {"features": 0.0, "feature_mask": False}

    def __init__(self, config: AudioProcessorConfig):
        self.config = config
        self.sample_rate = config.sample_rate
        self.n_mels = config.n_mels
        self.win_length = config.win_length or config.n_fft
        if self.win_length > config.n_fft:
            raise DataError(f"audio processor: win_length {self.win_length} exceeds n_fft {config.n_fft}")
        self.loader = _WaveformLoader(config.sample_rate, config.max_seconds, config.max_seconds_file, config.crop)
        max_samples = self.loader.max_samples
        self.num_frames = None if max_samples is None else 1 + max_samples // config.hop_length

    def check(self, raw: Any) -> None:
        self.loader.check(raw)

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        cfg = self.config
        wave = self.loader.load(raw)
        if augment:
            wave = _augment_wave(wave, cfg.gain_db, cfg.time_shift_seconds, cfg.sample_rate)
            if self.loader.max_samples is not None:
                wave = wave[: self.loader.max_samples]
        return self.features_from_wave(wave, augment)

    def features_from_wave(self, wave: Tensor, augment: bool = False) -> dict[str, Tensor]:
        """wave [S] at ``sample_rate`` (already cropped) → {"features": [n_mels, T], "feature_mask": [T]}."""
        cfg = self.config
        mel = log_mel_spectrogram(
            wave, cfg.sample_rate, cfg.n_fft, cfg.hop_length, self.win_length, cfg.n_mels, cfg.f_min, cfg.f_max
        )
        if cfg.normalize == "utterance":
            mel = (mel - mel.mean()) / (mel.std(unbiased=False) + 1e-5)
        elif cfg.normalize == "global":
            mel = (mel - cfg.global_mean) / cfg.global_std
        real = mel.shape[1]
        if augment:
            mel = spec_augment(mel, real, cfg.freq_masks, cfg.freq_mask_width, cfg.time_masks, cfg.time_mask_width)
        total = self.num_frames or real
        features = mel.new_zeros(cfg.n_mels, total)
        features[:, : min(real, total)] = mel[:, :total]
        mask = torch.zeros(total, dtype=torch.bool)
        mask[: min(real, total)] = True
        return {"features": features, "feature_mask": mask}

    def empty(self) -> dict[str, Tensor]:
        total = self.num_frames or 1
        return {"features": torch.zeros(self.n_mels, total), "feature_mask": torch.zeros(total, dtype=torch.bool)}


# ---------------------------------------------------------------------------------------------- HF extractor


class HFAudioProcessor(Processor):
    """Wraps ``transformers.AutoFeatureExtractor``: waveform at the extractor's rate → its tensors (no batch dim).

    The checkpoint's own extractor does the features, so they are what the model was trained on:
    Wav2Vec2FeatureExtractor's zero-mean unit-variance waveform ``input_values`` [S] (+ ``attention_mask``),
    ASTFeatureExtractor's Kaldi fbank ``input_values`` [frames, mels] (padded / cut to its ``max_length``, the
    model's position table) and WhisperFeatureExtractor's log-mel ``input_features`` [mels, 3000] (30 s).
    ``trust_remote_code`` is passed explicitly (False: an extractor needing the checkpoint's code is refused).
    Raises DataError when the extractor cannot be loaded.
    """

    kind = "audio"

    def __init__(self, pretrained: str, config: AudioProcessorConfig, trust_remote_code: bool = False,
                 revision: str | None = None):
        from transformers import AutoFeatureExtractor

        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(
                pretrained, revision=revision, trust_remote_code=trust_remote_code
            )
        except Exception as err:
            hint = ""
            if not trust_remote_code and "trust_remote_code" in str(err):
                hint = (" It needs code shipped with the checkpoint, which polymodal runs only when the person "
                        "loading the model asks (trust_remote_code=True); a file inside a model directory cannot.")
            raise DataError(f"cannot load the feature extractor of {pretrained!r}: {err}{hint}") from err
        self.config = config
        self.sample_rate = int(getattr(self.extractor, "sampling_rate", config.sample_rate))
        self.loader = _WaveformLoader(self.sample_rate, config.max_seconds, config.max_seconds_file, config.crop)
        params = inspect.signature(self.extractor.__call__).parameters
        self._call_kwargs = {"return_attention_mask": True} if "return_attention_mask" in params else {}
        pad = getattr(self.extractor, "padding_value", 0.0)
        self.pad_values = {"input_values": pad, "input_features": pad, "attention_mask": 0}
        self._empty: dict[str, Tensor] | None = None

    def check(self, raw: Any) -> None:
        self.loader.check(raw)

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        wave = self.loader.load(raw)
        if augment:
            wave = _augment_wave(wave, self.config.gain_db, self.config.time_shift_seconds, self.sample_rate)
        return self._extract(wave)

    def _extract(self, wave: Tensor) -> dict[str, Tensor]:
        out = self.extractor(
            wave.numpy(), sampling_rate=self.sample_rate, return_tensors="pt", **self._call_kwargs
        )
        return {key: value[0] for key, value in out.items() if isinstance(value, Tensor)}

    def empty(self) -> dict[str, Tensor]:
        if self._empty is None:
            tensors = self._extract(torch.zeros(max(1, self.sample_rate // 10)))
            if "attention_mask" in tensors:
                tensors["attention_mask"] = torch.zeros_like(tensors["attention_mask"])
            self._empty = tensors
        return {key: value.clone() for key, value in self._empty.items()}

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = super().save_pretrained(directory)
        self.extractor.save_pretrained(str(directory))
        return directory


def build_audio_processor(cfg: ModalityConfig, prefix: str) -> Processor:
    options = parse_options(AudioProcessorConfig, cfg.processor, prefix)
    if cfg.pretrained:
        trust = cfg.options.get("trust_remote_code") is True
        return HFAudioProcessor(cfg.pretrained, options, trust, cfg.options.get("revision"))
    return AudioProcessor(options)
