"""A pretrained audio modality is processed exactly as its Hugging Face feature extractor does (Wav2Vec2's
normalised waveform, AST's fbank, Whisper's log-mel), and the encoder on those features equals the HF model."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import soundfile as sf
import torch
from hf_fixtures import save_tiny_ast, save_tiny_wav2vec2
from transformers import AutoFeatureExtractor, AutoModel

from polymodal.config import ModalityConfig
from polymodal.data import build_processor
from polymodal.data.audio import HFAudioProcessor
from polymodal.encoders import build_encoder

TOLERANCE = 1e-5


def save_tiny_whisper(directory):
    """WhisperModel (16 mel bins, 1 s windows = 100 frames → 50 positions) + a matching extractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(
        num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=50,
        max_target_positions=16, vocab_size=64, pad_token_id=1, bos_token_id=2, eos_token_id=3,
        decoder_start_token_id=2,
    )
    WhisperModel(config).save_pretrained(str(directory))
    WhisperFeatureExtractor(feature_size=16, chunk_length=1, sampling_rate=16000).save_pretrained(str(directory))
    return directory


CHECKPOINTS = {"wav2vec2": save_tiny_wav2vec2, "ast": save_tiny_ast, "whisper": save_tiny_whisper}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-audio")
    return {name: save(root / name) for name, save in CHECKPOINTS.items()}


def waves():
    rng = np.random.default_rng(0)
    # different lengths and loudness: normalisation and padding both matter
    return [(rng.standard_normal(n) * scale).astype(np.float32) for n, scale in ((4000, 0.3), (2400, 1.5))]


@pytest.mark.parametrize("family", list(CHECKPOINTS))
def test_processor_output_equals_the_feature_extractor(checkpoints, family):
    directory = str(checkpoints[family])
    processor = build_processor(ModalityConfig(kind="audio", pretrained=directory), "audio")
    assert isinstance(processor, HFAudioProcessor) and processor.sample_rate == 16000
    extractor = AutoFeatureExtractor.from_pretrained(directory)
    for wave in waves():
        ours = processor(wave)
        reference = extractor(wave, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        for key, value in reference.items():
            assert (ours[key] - value[0]).abs().max() < TOLERANCE, key
    if family == "wav2vec2":  # zero mean, unit variance per utterance (do_normalize)
        values = processor(waves()[1])["input_values"]
        assert abs(float(values.mean())) < 1e-3 and abs(float(values.std()) - 1) < 1e-2


@pytest.mark.parametrize("family", list(CHECKPOINTS))
def test_encoder_on_processed_file_equals_the_hf_model(checkpoints, family, tmp_path):
    directory = str(checkpoints[family])
    cfg = ModalityConfig(kind="audio", pretrained=directory, processor={"max_seconds": None})
    processor, encoder = build_processor(cfg, "audio"), build_encoder(cfg).eval()
    paths = []
    for i, wave in enumerate(waves()):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], wave, 16000, subtype="FLOAT")
    batch = processor.collate([processor(path) for path in paths])
    extractor = AutoFeatureExtractor.from_pretrained(directory)
    # Whisper's encoder takes exactly its 30 s (here 1 s) window: the extractor's own default pads to it.
    padding = "max_length" if family == "whisper" else True
    reference_inputs = extractor(waves(), sampling_rate=16000, padding=padding, return_tensors="pt",
                                 return_attention_mask=True)
    model = AutoModel.from_pretrained(directory).eval()
    tower = model.get_encoder() if family == "whisper" else model
    accepted = set(inspect.signature(tower.forward).parameters)
    with torch.no_grad():
        out = encoder(batch, torch.tensor([True, True]))
        reference = tower(**{k: v for k, v in reference_inputs.items() if k in accepted}).last_hidden_state
    assert (out.tokens - reference).abs().max() < 1e-4


def test_fixed_window_models_never_get_more_frames_than_their_positions(checkpoints):
    """AST's position table and Whisper's encoder take a fixed number of frames: a long clip is cut to it."""
    from transformers import AutoConfig

    long_wave = np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32)  # 3 s
    ast = str(checkpoints["ast"])
    frames = build_processor(ModalityConfig(kind="audio", pretrained=ast), "audio")(long_wave)["input_values"]
    assert frames.shape[0] == AutoConfig.from_pretrained(ast).max_length == 64
    whisper = str(checkpoints["whisper"])
    features = build_processor(ModalityConfig(kind="audio", pretrained=whisper), "audio")(long_wave)
    assert features["input_features"].shape[-1] == 2 * AutoConfig.from_pretrained(whisper).max_source_positions
