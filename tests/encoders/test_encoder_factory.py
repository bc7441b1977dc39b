"""build_encoder: name resolution, options from the processor, and the errors a config mistake gets."""

from __future__ import annotations

import pytest
from hf_fixtures import tiny_hf_model_dir

from polymodal.config import ModalityConfig
from polymodal.encoders import DEFAULT_PRESETS, HFEncoder, build_encoder, names_for_kind, resolve_encoder_name
from polymodal.registry import ENCODERS


def test_registry_holds_the_documented_presets():
    for name in ["image_cnn", "image_vit", "audio_cnn", "audio_transformer", "text_transformer", "hf"]:
        assert name in ENCODERS
    assert "image_vit" in names_for_kind("image") and "audio_cnn" not in names_for_kind("image")
    assert "hf" in names_for_kind("audio")


@pytest.mark.parametrize("kind", ["image", "audio", "text"])
def test_auto_resolves_to_the_kind_preset_or_hf(kind):
    assert resolve_encoder_name(ModalityConfig(kind=kind)) == DEFAULT_PRESETS[kind]
    assert build_encoder(ModalityConfig(kind=kind)).kind == kind
    assert resolve_encoder_name(ModalityConfig(kind=kind, pretrained="some/checkpoint")) == "hf"


def test_auto_with_pretrained_builds_the_hf_encoder():
    encoder = build_encoder(ModalityConfig(kind="text", pretrained=str(tiny_hf_model_dir("bert"))))
    assert isinstance(encoder, HFEncoder) and encoder.output_dim == 32


def test_options_reach_the_constructor_and_processor_facts_fill_the_rest():
    cfg = ModalityConfig(
        kind="image", encoder="image_vit", options={"dim": 48, "heads": 3, "depth": 1},
        processor={"image_size": 24, "channels": 1},
    )
    encoder = build_encoder(cfg)
    assert encoder.output_dim == 48 and encoder.in_channels == 1 and encoder.grid == (6, 6)
    text = build_encoder(ModalityConfig(kind="text", processor={"tokenizer": "bytes"}))
    assert text.vocab_size == 260
    audio = build_encoder(ModalityConfig(kind="audio", encoder="audio_transformer", processor={"n_mels": 32}))
    assert audio.n_mels == 32
    explicit = build_encoder(ModalityConfig(kind="text", options={"vocab_size": 100}, processor={"tokenizer": "bytes"}))
    assert explicit.vocab_size == 100, "an explicit option wins over the processor"


def test_unknown_option_names_the_encoder():
    with pytest.raises(TypeError, match=r"encoder 'image_cnn'.*widht"):
        build_encoder(ModalityConfig(kind="image", encoder="image_cnn", options={"widht": 3}))


def test_kind_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'audio_cnn' encodes audio but the modality kind is 'image'"):
        build_encoder(ModalityConfig(kind="image", encoder="audio_cnn"), name="front_camera")


def test_unknown_encoder_name_suggests_the_close_one():
    with pytest.raises(KeyError, match="(?i)did you mean 'image_vit'"):
        build_encoder(ModalityConfig(kind="image", encoder="image_vitt"))


def test_pretrained_with_a_preset_or_hf_without_pretrained_fail_clearly():
    with pytest.raises(ValueError, match="takes no `pretrained`"):
        build_encoder(ModalityConfig(kind="image", encoder="image_cnn", pretrained="google/vit-base-patch16-224"))
    with pytest.raises(ValueError, match="needs `pretrained`"):
        build_encoder(ModalityConfig(kind="text", encoder="hf"))
    with pytest.raises(ValueError, match="set by the modality config"):
        build_encoder(ModalityConfig(kind="text", pretrained="x", options={"load_weights": False}))


def test_missing_checkpoint_names_it(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no-such-model"):
        build_encoder(ModalityConfig(kind="text", pretrained=missing), load_weights=False)
