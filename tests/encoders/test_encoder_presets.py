"""Every registered from-scratch encoder preset, enumerated from the registry (a new preset is tested for free).

Batch of 4 per kind; the last sample lacks the modality (zero inputs, all-False mask, present=False).
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from polymodal.config import ModalityConfig
from polymodal.encoders import build_encoder, preset_names
from polymodal.registry import ENCODERS

PRESETS = preset_names()
PROCESSOR_OPTIONS = {
    "image": {"image_size": 16, "channels": 1},
    "audio": {"n_mels": 40},
    "text": {"tokenizer": "bytes"},
}
AUDIO_LENGTHS = [50, 37, 20, 0]
TEXT_LENGTHS = [9, 6, 3, 0]
PRESENT = torch.tensor([True, True, True, False])


def kind_of(name: str) -> str:
    return ENCODERS.get(name).kind


# Presets whose default size does not fit 16 px test images (CLIP ViT-B/32 has 32 px patches) or is too slow for
# a unit test (the ViT-B/32 text tower): the tiny variant, with room for the byte tokenizer's 260 ids.
PRESET_OPTIONS = {"clip_vision": {"preset": "tiny"}, "clip_text": {"preset": "tiny", "vocab_size": 300}}


def make_encoder(name: str, **options) -> torch.nn.Module:
    kind = kind_of(name)
    options = {**PRESET_OPTIONS.get(name, {}), **options}
    return build_encoder(ModalityConfig(kind=kind, encoder=name, processor=PROCESSOR_OPTIONS[kind], options=options))


def make_inputs(kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Inputs as the processors collate them, with sample 3 absent (zeros / padding)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "image":
        pixels = torch.randn(4, 1, 16, 16, generator=gen)
        pixels[3] = 0
        return {"pixel_values": pixels}
    if kind == "audio":
        frames = max(AUDIO_LENGTHS)
        mask = torch.arange(frames)[None] < torch.tensor(AUDIO_LENGTHS)[:, None]
        features = torch.randn(4, 40, frames, generator=gen) * mask[:, None]
        return {"features": features, "feature_mask": mask}
    length = max(TEXT_LENGTHS)
    mask = torch.arange(length)[None] < torch.tensor(TEXT_LENGTHS)[:, None]
    ids = torch.randint(4, 260, (4, length), generator=gen) * mask
    return {"input_ids": ids, "attention_mask": mask.long()}


@pytest.mark.parametrize("name", PRESETS)
def test_shapes_mask_and_absent_sample(name):
    encoder = make_encoder(name).eval()
    out = encoder(make_inputs(kind_of(name)), PRESENT)
    batch, tokens, dim = out.tokens.shape
    assert (batch, dim) == (4, encoder.output_dim) and tokens > 0
    assert out.mask.shape == (4, tokens) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (4, encoder.output_dim)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert not out.mask[3].any(), "an absent sample has no real tokens"
    assert torch.equal(out.pooled[3], torch.zeros(encoder.output_dim)), "an absent sample pools to zeros"
    assert out.mask[:3].any(dim=1).all() and (out.pooled[:3].abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("name", PRESETS)
def test_gradient_reaches_every_parameter_and_stays_finite(name):
    encoder = make_encoder(name).train()
    out = encoder(make_inputs(kind_of(name)), PRESENT)
    loss = out.pooled.square().sum() + out.tokens[out.mask].square().mean()
    loss.backward()
    for param_name, param in encoder.named_parameters():
        assert param.grad is not None, f"{name}.{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name}.{param_name} has an all-zero gradient"


@pytest.mark.parametrize("name", PRESETS)
def test_freeze_leaves_parameters_and_buffers_bit_identical(name):
    encoder = make_encoder(name).freeze()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head = torch.nn.Linear(encoder.output_dim, 3)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=0.1, weight_decay=0.1)
    encoder.train()  # what the trainer does every epoch: a frozen encoder must stay in eval mode
    assert not encoder.training
    out = encoder(make_inputs(kind_of(name)), PRESENT)
    loss = head(out.pooled).logsumexp(-1).sum()
    loss.backward()
    optimizer.step()
    assert all(not p.requires_grad for p in encoder.parameters())
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), f"{name}: {key} changed although the encoder is frozen"


@pytest.mark.parametrize("name", PRESETS)
def test_state_dict_round_trip_reproduces_outputs(name):
    source = make_encoder(name).eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    torch.manual_seed(123)  # the copy starts from different random weights
    copy = make_encoder(name).eval()
    inputs = make_inputs(kind_of(name))
    assert not torch.allclose(copy(inputs, PRESENT).pooled, source(inputs, PRESENT).pooled)
    buffer.seek(0)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in source.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value), key
    assert torch.equal(copy(inputs, PRESENT).pooled, source(inputs, PRESENT).pooled)


@pytest.mark.parametrize("name", [n for n in PRESETS if kind_of(n) in ("audio", "text")])
def test_padding_does_not_change_real_tokens(name):
    """Eval mode: a sample encoded alone equals the same sample inside a longer, padded batch."""
    encoder = make_encoder(name).eval()
    kind = kind_of(name)
    batch = make_inputs(kind)
    out = encoder(batch, PRESENT)
    length = AUDIO_LENGTHS[1] if kind == "audio" else TEXT_LENGTHS[1]
    alone = {key: value[1:2, ..., :length] for key, value in batch.items()}
    single = encoder(alone, torch.tensor([True]))
    real = int(single.mask.sum())
    assert real == int(out.mask[1].sum()), "the frame mask must shrink like the frames"
    torch.testing.assert_close(out.tokens[1, :real], single.tokens[0, :real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled[1], single.pooled[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in PRESETS if kind_of(n) == "audio"])
def test_audio_frame_mask_follows_the_real_lengths(name):
    encoder = make_encoder(name).eval()
    out = encoder(make_inputs("audio"), PRESENT)
    real = out.mask.sum(dim=1).tolist()
    assert real[3] == 0 and real[0] > real[1] > real[2] > 0
    ratio = AUDIO_LENGTHS[0] / out.tokens.shape[1]  # the encoder's time downsampling factor
    for got, length in zip(real[:3], AUDIO_LENGTHS[:3]):
        assert abs(got - math.ceil(length / ratio)) <= 1


def test_vit_interpolates_positions_for_a_new_image_size():
    encoder = make_encoder("image_vit", patch_size=4).eval()  # learned for 16 px: 4×4 patches
    pixels = torch.randn(2, 1, 32, 32)
    out = encoder({"pixel_values": pixels}, torch.tensor([True, True]))
    assert out.tokens.shape == (2, 1 + 8 * 8, encoder.output_dim) and torch.isfinite(out.pooled).all()
    with pytest.raises(ValueError, match="patch_size"):
        encoder({"pixel_values": torch.randn(1, 1, 18, 18)}, torch.tensor([True]))


def test_wrong_input_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="in_channels"):
        make_encoder("image_cnn")({"pixel_values": torch.randn(1, 3, 16, 16)}, torch.tensor([True]))
    with pytest.raises(KeyError, match="features"):
        make_encoder("audio_cnn")({"input_values": torch.randn(1, 800)}, torch.tensor([True]))
    with pytest.raises(ValueError, match="vocab_size"):
        ids = torch.tensor([[1, 300]])
        make_encoder("text_transformer")({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.tensor([True]))
