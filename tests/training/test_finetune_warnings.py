"""Strategies that freeze an encoder's own weights are flagged on randomly initialised encoders, when the config
is read; encoders with learned weights (pretrained, finetune.init_from) are not."""

from __future__ import annotations

import warnings

import pytest
from finetune_fixtures import tiny_model

from polymodal.config import Config, from_dict
from polymodal.models import MultimodalModel
from polymodal.training.finetune import (
    FREEZING_STRATEGIES,
    STRATEGY_DESCRIPTIONS,
    apply_finetune,
    parse_finetune_config,
)
from polymodal.training.finetune_warnings import FinetuneWarning, untrained_frozen_encoders

MODALITIES = {
    "image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]}},
    "audio": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [4, 8]}},
    "text": {"kind": "text", "encoder": "text_transformer", "options": {"dim": 16, "depth": 1, "heads": 2}},
}


def read(finetune, modalities=MODALITIES) -> list[str]:
    """The FinetuneWarning messages raised while the config is read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_dict(Config, {"model": {"modalities": modalities}, "finetune": finetune})
    return [str(w.message) for w in caught if issubclass(w.category, FinetuneWarning)]


@pytest.mark.parametrize("strategy", FREEZING_STRATEGIES)
def test_every_freezing_strategy_on_scratch_encoders_warns(strategy):
    (message,) = read({"default": strategy})
    for name, encoder in (("image", "image_cnn"), ("audio", "audio_cnn"), ("text", "text_transformer")):
        assert f"{name} ({encoder})" in message
    assert "randomly initialised" in message and strategy in message and "finetune.encoders" in message


def test_full_does_not_warn_and_named_encoders_are_checked_too():
    assert read({"default": "full"}) == []
    (message,) = read({"default": "full", "encoders": {"text": "lora"}})
    assert "text (text_transformer)" in message and "image (" not in message.split("Strategy per encoder")[0]
    assert "Strategy per encoder: image=full (random init), audio=full (random init), text=lora (random init)" in message


def test_freeze_true_under_full_warns():
    modalities = dict(MODALITIES, audio=dict(MODALITIES["audio"], freeze=True))
    (message,) = read({"default": "full"}, modalities)
    assert "frozen freezes the weights of audio (audio_cnn)" in message


def test_pretrained_encoders_are_exempt_and_named_as_such():
    # the config is only read: a pretrained name is not loaded here, so any string will do
    modalities = dict(MODALITIES, text={"kind": "text", "pretrained": "some-org/tiny-bert"})
    (message,) = read({"default": "lora"}, modalities)
    assert "image (image_cnn) and audio (audio_cnn)" in message and "text (hf)" not in message
    assert "text=lora (pretrained)" in message
    assert "--set finetune.default=full --set finetune.encoders.text=lora" in message
    only_text = {"text": modalities["text"]}
    assert read({"default": "lora"}, only_text) == []


def test_init_from_exempts_exactly_the_encoders_it_holds(tmp_path):
    source = tiny_model()  # image + text encoders
    source.save_pretrained(tmp_path / "pretrain" / "best")
    modalities = {"image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]}},
                  "text": MODALITIES["text"], "audio": MODALITIES["audio"]}
    # a run directory (its best/) works, as for loading
    (message,) = read({"default": "lora", "init_from": str(tmp_path / "pretrain")}, modalities)
    assert "audio (audio_cnn)" in message and "image (" not in message.split(", which")[0]
    cfg = parse_finetune_config({"default": "lora", "init_from": str(tmp_path / "pretrain" / "best")})
    assert untrained_frozen_encoders(from_dict(Config, {"model": {"modalities": modalities}}).model.modalities,
                                     cfg) == {"audio": "lora"}


def test_reloading_a_finetuned_model_does_not_warn(tmp_path):
    model = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply_finetune(model, {"default": "lora"})
    model.save_pretrained(tmp_path / "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MultimodalModel.from_pretrained(tmp_path / "m")
    assert not [w for w in caught if issubclass(w.category, FinetuneWarning)]


def test_every_strategy_has_a_description():
    from typing import get_args

    from polymodal.training.finetune import Strategy

    assert set(STRATEGY_DESCRIPTIONS) == set(get_args(Strategy))
    assert all(len(text) > 20 and "\n" not in text for text in STRATEGY_DESCRIPTIONS.values())


def test_clip_towers_with_a_checkpoint_in_their_options_count_as_pretrained():
    """clip_vision / clip_text name their Hugging Face checkpoint as ``options.pretrained``: LoRA on such a tower
    (the HF CLIP use case) is not flagged; the same tower built from its preset is."""
    towers = {
        "image": {"kind": "image", "encoder": "clip_vision", "options": {"pretrained": "some/clip", "project": True}},
        "text": {"kind": "text", "encoder": "clip_text", "options": {"preset": "tiny"}},
    }
    cfg = parse_finetune_config({"encoders": {"image": "frozen", "text": "lora"}})
    modalities = from_dict(Config, {"model": {"modalities": towers}}).model.modalities
    assert untrained_frozen_encoders(modalities, cfg) == {"text": "lora"}
    (message,) = read({"encoders": {"image": "frozen", "text": "lora"}}, towers)
    assert "image=frozen (pretrained)" in message and "text=lora (random init)" in message
