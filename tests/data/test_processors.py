"""Processors: shapes / dtypes, reference log-mel, resampling, augmentation, caps, tokenizers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.config import ConfigError, ModalityConfig
from polymodal.data import DataError, build_processor
from polymodal.data.audio_dsp import log_mel_spectrogram, mel_filterbank, resample


def image_proc(**options):
    return build_processor(ModalityConfig(kind="image", processor=options), "image")


def audio_proc(**options):
    return build_processor(ModalityConfig(kind="audio", processor=options), "audio")


# ---------------------------------------------------------------------------------------------- image


def test_image_inputs_give_normalised_pixel_values(tmp_path):
    rgb = image_proc(image_size=16, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    array = np.full((20, 30, 3), 255, dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "white.png")
    for raw in (array, Image.fromarray(array), str(tmp_path / "white.png"), array.astype(np.float32) / 255):
        out = rgb(raw)["pixel_values"]
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32
        assert torch.allclose(out, torch.ones_like(out))  # (1 - 0.5) / 0.5
    gray = image_proc(image_size=8, channels=1, mean=[0.0], std=[1.0])
    ramp = np.tile(np.arange(8, dtype=np.uint8) * 32, (8, 1))
    out = gray(ramp)["pixel_values"]
    assert out.shape == (1, 8, 8)
    assert torch.allclose(out[0, 0], torch.arange(8) * 32 / 255.0, atol=1e-6)  # same size: no resampling
    assert gray.empty()["pixel_values"].shape == (1, 8, 8)


def test_image_resize_center_crop_keeps_the_middle():
    proc = image_proc(image_size=4, channels=1, mean=[0.0], std=[1.0], resample="nearest")
    wide = np.zeros((4, 12), dtype=np.uint8)
    wide[:, 4:8] = 255  # a white middle third
    assert torch.all(proc(wide)["pixel_values"] == 1.0)


def test_image_augmentation_changes_pixels_not_shape():
    proc = image_proc(image_size=32, channels=1)
    digit = np.zeros((8, 8), dtype=np.uint8)
    digit[2:6, 3:5] = 255
    plain = proc(digit)["pixel_values"]
    torch.manual_seed(1)
    augmented = proc(digit, augment=True)["pixel_values"]
    assert augmented.shape == plain.shape
    assert (augmented - plain).abs().max() > 0.1


def test_image_pixel_cap_and_format_checked_from_header(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png.*300×200 = 60,000 pixels.*max_pixels=50,000"):
        image_proc(max_pixels=50_000).check(str(tmp_path / "big.png"))
    Image.new("RGB", (10, 10)).save(tmp_path / "small.bmp")
    with pytest.raises(DataError, match=r"small\.bmp.*format BMP"):
        image_proc(formats=["PNG"]).check(str(tmp_path / "small.bmp"))


def test_image_reads_size_and_stats_from_hf_preprocessor_config(tmp_path):
    config = {
        "do_resize": True, "size": {"shortest_edge": 40}, "do_center_crop": True, "crop_size": {"height": 36, "width": 36},
        "do_normalize": True, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5], "resample": 3,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    proc = build_processor(ModalityConfig(kind="image", pretrained=str(tmp_path)), "image")
    assert (proc.image_size, proc.resize_size, proc.config.resample) == (36, 40, "bicubic")
    assert proc.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    # explicit options win over the checkpoint's file
    proc = build_processor(ModalityConfig(kind="image", pretrained=str(tmp_path), processor={"image_size": 20}), "image")
    assert proc(np.zeros((50, 50, 3), dtype=np.uint8))["pixel_values"].shape == (3, 20, 20)


def test_unknown_processor_key_names_the_full_path():
    with pytest.raises(ConfigError, match=r"model\.modalities\.front_camera\.processor\.img_size"):
        build_processor(ModalityConfig(kind="image", processor={"img_size": 3}), "front_camera")


# ---------------------------------------------------------------------------------------------- audio


def test_log_mel_matches_transformers_reference():
    from transformers.audio_utils import spectrogram, window_function

    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000) + 0.05 * rng.standard_normal(4000)).astype(np.float32)
    ours = log_mel_spectrogram(torch.from_numpy(wave), 8000, n_fft=256, hop_length=80, win_length=256, n_mels=40)
    reference = spectrogram(
        wave, window_function(256, "hann", periodic=True), frame_length=256, hop_length=80, fft_length=256,
        power=2.0, center=True, pad_mode="reflect", mel_filters=mel_filterbank(8000, 256, 40, 0.0, 4000.0).numpy(),
        mel_floor=1e-10,
    )
    reference = np.log(reference + 1e-6)
    assert ours.shape == reference.shape == (40, 51)
    np.testing.assert_allclose(ours.numpy(), reference, atol=2e-3, rtol=1e-4)
    # the filterbank: every one of the 40 filters reaches some FFT bin, and the 440 Hz tone peaks near 440 Hz
    bank = mel_filterbank(8000, 256, 40, 0.0, 4000.0)
    assert (bank.sum(0) > 0).all()
    peak_filter = int(ours[:, 10:40].mean(1).argmax())
    centre_hz = float((bank[:, peak_filter] * torch.arange(129) * 8000 / 256).sum() / bank[:, peak_filter].sum())
    assert abs(centre_hz - 440) < 60


@pytest.mark.parametrize("orig,new", [(8000, 16000), (44100, 16000), (16000, 8000)])
def test_resample_keeps_a_sine_frequency(orig, new):
    freq = 1000.0
    t = np.arange(orig) / orig  # one second
    out = resample(torch.from_numpy(np.sin(2 * np.pi * freq * t).astype(np.float32)), orig, new).numpy()
    assert len(out) == new
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * new / len(out) - freq) <= 1.0
    # amplitude preserved away from the edges
    assert abs(np.abs(out[new // 4 : 3 * new // 4]).max() - 1.0) < 0.02


def test_resample_removes_content_above_the_new_nyquist():
    t = np.arange(16000) / 16000
    out = resample(torch.from_numpy(np.sin(2 * np.pi * 6000 * t).astype(np.float32)), 16000, 8000).numpy()
    assert np.abs(out[200:-200]).max() < 0.05  # 6 kHz cannot exist at 8 kHz: filtered, not aliased to 2 kHz


def test_audio_features_shapes_mask_and_inputs(tmp_path):
    proc = audio_proc(sample_rate=8000, max_seconds=1.0, n_fft=256, hop_length=80, n_mels=40)
    wave = (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32)  # 0.5 s
    sf.write(tmp_path / "a.wav", (wave * 32767).astype(np.int16), 8000, subtype="PCM_16")
    sf.write(tmp_path / "stereo16k.wav", np.stack([wave, wave], 1).repeat(2, 0), 16000)
    outputs = [proc(wave), proc((wave, 8000)), proc(str(tmp_path / "a.wav")), proc(str(tmp_path / "stereo16k.wav"))]
    for out in outputs:
        assert out["features"].shape == (40, 101) and out["features"].dtype == torch.float32
        assert out["feature_mask"].dtype == torch.bool
        assert out["feature_mask"].sum() == 51 and out["feature_mask"][:51].all()  # 1 + 4000 // 80 real frames
        assert torch.all(out["features"][:, 51:] == 0)
    torch.testing.assert_close(outputs[0]["features"], outputs[2]["features"], atol=5e-3, rtol=0)  # int16 quantisation
    long = proc((np.ones(16000 * 3, dtype=np.float32) * 0.1, 16000))
    assert long["feature_mask"].all()  # cropped to max_seconds: every frame real
    batch = proc.collate([outputs[0], proc.empty()])
    assert batch["features"].shape == (2, 40, 101) and not batch["feature_mask"][1].any()


def test_variable_length_audio_collates_with_padding():
    proc = audio_proc(sample_rate=8000, max_seconds=None, n_fft=256, hop_length=80, n_mels=16)
    short, longer = proc(np.zeros(800, np.float32) + 0.01), proc(np.zeros(2400, np.float32) + 0.01)
    batch = proc.collate([short, longer])
    assert batch["features"].shape == (2, 16, 31)
    assert batch["feature_mask"].sum(1).tolist() == [11, 31]


def test_spec_augment_masks_something():
    proc = audio_proc(sample_rate=8000, max_seconds=1.0, n_fft=256, hop_length=80, n_mels=40, time_mask_width=10)
    wave = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    plain = proc(wave)["features"]
    torch.manual_seed(0)
    augmented = proc(wave, augment=True)["features"]
    zeroed_rows = (augmented == 0).all(1) & ~(plain == 0).all(1)
    zeroed_cols = (augmented == 0).all(0) & ~(plain == 0).all(0)
    assert zeroed_rows.any() or zeroed_cols.any()
    untouched = ~zeroed_rows.unsqueeze(1) & ~zeroed_cols.unsqueeze(0) & (augmented != 0)
    assert torch.equal(augmented[untouched], plain[untouched])


def test_audio_duration_cap_and_missing_file(tmp_path):
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 5, dtype=np.int16), 8000)
    proc = audio_proc(max_seconds_file=2.0)
    with pytest.raises(DataError, match=r"long\.wav.*5\.0 s.*max_seconds_file=2\.0"):
        proc.check(str(tmp_path / "long.wav"))
    with pytest.raises(DataError, match=r"nope\.wav.*does not exist"):
        proc(str(tmp_path / "nope.wav"))


# ---------------------------------------------------------------------------------------------- text


def test_builtin_text_tokenizers():
    words = build_processor(ModalityConfig(kind="text", processor={"max_length": 5, "vocab_size": 100}), "text")
    a, b = words("A handwritten seven"), words("a HANDWRITTEN seven")
    assert torch.equal(a["input_ids"], b["input_ids"])  # lower-cased words
    assert a["input_ids"].tolist()[0] == 1 and a["input_ids"].tolist()[-1] == 2 and len(a["input_ids"]) == 5
    assert all(4 <= i < 100 for i in a["input_ids"][1:-1].tolist())
    truncated = words("one two three four five six")["input_ids"]
    assert len(truncated) == 5
    byte = build_processor(ModalityConfig(kind="text", processor={"tokenizer": "bytes", "padding": "max_length",
                                                                   "max_length": 8}), "text")
    out = byte("hé")
    assert byte.vocab_size == 260 and byte.pad_token_id == 0
    assert out["input_ids"].tolist() == [1, 4 + 104, 4 + 0xC3, 4 + 0xA9, 2, 0, 0, 0]
    assert out["attention_mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    batch = words.collate([words("seven"), words("a handwritten seven"), words.empty()])
    assert batch["input_ids"].shape == (3, 5) and batch["attention_mask"].sum(1).tolist() == [3, 5, 0]


def test_hf_tokenizer_from_local_vocab(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "handwritten", "seven", "someone", "says"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 names the first argument "vocab" (a vocab.txt path or a dict)
    BertTokenizerFast(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "tok")
    proc = build_processor(ModalityConfig(kind="text", pretrained=str(tmp_path / "tok"),
                                          processor={"max_length": 6}), "text")
    out = proc("someone says seven zebra")
    assert out["input_ids"].tolist() == [2, 8, 9, 7, 1, 3]  # [CLS] someone says seven [UNK] [SEP]
    assert proc.vocab_size == 10 and proc.pad_token_id == 0
    batch = proc.collate([proc("a seven"), out])
    assert batch["input_ids"][0].tolist() == [2, 5, 7, 3, 0, 0]
    proc.save_pretrained(tmp_path / "saved")
    again = build_processor(ModalityConfig(kind="text", pretrained=str(tmp_path / "saved")), "text")
    assert again("a seven")["input_ids"].tolist() == [2, 5, 7, 3]
