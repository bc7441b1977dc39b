"""Integrated gradients per modality: completeness (Σ IG = f(x) − f(baseline)), baselines, tokens, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_toy import AUDIO_CNN, IMAGE_VIT, TEXT, build_model

from polymodal.data.text import CLS_ID, PAD_ID, SEP_ID
from polymodal.explain import ExplainError, integrated_gradients, text_integrated_gradients
from polymodal.explain.attributions import pad_baseline, token_strings
from polymodal.inference.predictor import Predictor
from polymodal.types import Batch

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, (8, 8), dtype=np.uint8)
AUDIO = ((RNG.normal(size=3000) * 0.1).astype(np.float32), 8000)


def _target_logit(model, batch, target):
    with torch.no_grad():
        return float(model(batch).logits[0, target])


def _with(batch: Batch, modality: str, key: str, value: torch.Tensor) -> Batch:
    inputs = {m: dict(t) for m, t in batch.inputs.items()}
    inputs[modality][key] = value
    return Batch(inputs=inputs, present=batch.present)


@pytest.fixture(scope="module")
def model():
    return build_model({"image": IMAGE_VIT, "audio": AUDIO_CNN, "text": TEXT}, fusion="transformer")


@pytest.mark.parametrize("text", ["a handwritten seven", "someone says nine", "zero", "one two three four five six"])
@pytest.mark.parametrize("target", [0, 2])
def test_text_token_scores_sum_to_the_logit_difference(model, text, target):
    batch = Predictor(model).make_batch([{"image": IMAGE, "text": text}])
    result = text_integrated_gradients(model, batch, "text", target, steps=64, text=text)
    ids = batch.inputs["text"]["input_ids"]
    baseline_ids = pad_baseline(ids, batch.inputs["text"]["attention_mask"], model.processors["text"])
    # f(x) and f(baseline) recomputed here, independently of the function under test
    difference = _target_logit(model, batch, target) - _target_logit(model, _with(batch, "text", "input_ids",
                                                                                  baseline_ids), target)
    assert float(result.scores.sum()) == pytest.approx(difference, abs=2e-3 + 1e-2 * abs(difference))
    assert abs(result.delta) < 2e-3 + 1e-2 * abs(difference)
    assert result.f_input - result.f_baseline == pytest.approx(difference, abs=1e-5)
    # one score per token; specials are kept in the baseline, so their embedding difference and score are 0
    assert result.scores.shape == ids.shape[1:]
    assert result.scores[0] == 0 and result.scores[-1] == 0
    assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
    assert result.tokens[1:-1] == text.lower().split()


def test_pad_baseline_replaces_only_real_non_special_tokens(model):
    ids = torch.tensor([[CLS_ID, 17, 23, SEP_ID, PAD_ID]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert pad_baseline(ids, mask, model.processors["text"]).tolist() == [[CLS_ID, PAD_ID, PAD_ID, SEP_ID, PAD_ID]]


def test_hf_text_encoder_token_scores_are_complete():
    from hf_fixtures import tiny_hf_model_dir

    bert = {"kind": "text", "pretrained": str(tiny_hf_model_dir("bert")), "processor": {"max_length": 16}}
    model = build_model({"text": bert}, fusion="concat")
    batch = Predictor(model).make_batch([{"text": "hello world"}])
    result = integrated_gradients(model, batch, "text", 1, steps=64)
    difference = result.f_input - result.f_baseline
    assert float(result.scores.sum()) == pytest.approx(difference, abs=2e-3 + 1e-2 * abs(difference))
    tokenizer = model.processors["text"].tokenizer
    assert result.tokens == tokenizer.convert_ids_to_tokens(batch.inputs["text"]["input_ids"][0].tolist())
    assert result.scores[0] == 0  # [CLS] kept in the baseline


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_image_scores_are_complete_and_baselines_are_what_the_docs_say(model, baseline):
    batch = Predictor(model).make_batch([{"image": IMAGE, "audio": AUDIO}])
    result = integrated_gradients(model, batch, "image", 1, baseline=baseline, steps=64)
    processor = model.processors["image"]
    expected = torch.full((1, 1, 8, 8), -0.5 / 0.5) if baseline == "black" else torch.zeros(1, 1, 8, 8)
    # black: the processor's own output for an all-black picture
    if baseline == "black":
        assert torch.allclose(processor(np.zeros((8, 8), np.uint8))["pixel_values"], expected[0])
    difference = _target_logit(model, batch, 1) - _target_logit(model, _with(batch, "image", "pixel_values",
                                                                             expected), 1)
    assert result.scores.shape == (1, 8, 8)
    assert float(result.scores.sum()) == pytest.approx(difference, abs=1e-3 + 1e-2 * abs(difference))


def test_log_mel_scores_cover_the_spectrogram_and_silence_is_the_processors_silence(model):
    batch = Predictor(model).make_batch([{"audio": AUDIO, "text": "seven"}])
    features = batch.inputs["audio"]["features"]
    zero = integrated_gradients(model, batch, "audio", 0, baseline="zero", steps=64)
    assert zero.scores.shape == features.shape[1:]
    assert zero.valid is not None and zero.valid.shape == features.shape[-1:]
    difference = zero.f_input - zero.f_baseline
    assert float(zero.scores.sum()) == pytest.approx(difference, abs=1e-3 + 2e-2 * abs(difference))
    silence = integrated_gradients(model, batch, "audio", 0, baseline="silence", steps=64)
    processor = model.processors["audio"]
    silent = processor.features_from_wave(torch.zeros(processor.loader.max_samples))["features"]
    expected = _target_logit(model, _with(batch, "audio", "features", silent[None]), 0)
    assert silence.f_baseline == pytest.approx(expected, abs=1e-5)


def test_token_strings_of_the_byte_tokenizer():
    model = build_model({"text": {**TEXT, "processor": {"tokenizer": "bytes", "max_length": 8}}}, fusion="concat")
    processor = model.processors["text"]
    ids = processor("hé!")["input_ids"]
    assert token_strings(processor, ids, "hé!")[:2] == ["[CLS]", "h"]


def test_errors_name_what_to_change(model):
    batch = Predictor(model).make_batch([{"image": IMAGE}])
    with pytest.raises(ExplainError, match="'audio' is absent"):
        integrated_gradients(model, batch, "audio", 0)
    with pytest.raises(ExplainError, match=r"image baseline 'white' is not one of \['black', 'mean'\]"):
        integrated_gradients(model, batch, "image", 0, baseline="white")
    two = Predictor(model).make_batch([{"image": IMAGE}, {"image": IMAGE}])
    with pytest.raises(ExplainError, match="one sample at a time"):
        integrated_gradients(model, two, "image", 0)
