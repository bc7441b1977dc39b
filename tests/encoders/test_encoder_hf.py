"""The "hf" encoder against the Hugging Face models it wraps: tiny random checkpoints saved to a temp dir."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_fixtures import TINY_HF_KINDS, tiny_hf_model_dir
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel, AutoTokenizer

from polymodal.config import ModalityConfig
from polymodal.encoders import HFEncoder, build_encoder, masked_mean

FAMILIES = ["bert", "vit", "resnet", "convnext", "ast", "wav2vec2"]
TOLERANCE = 1e-5


def hf_inputs(family: str) -> dict[str, torch.Tensor]:
    """A batch of 2 made by the checkpoint's own tokenizer / processor, padded where lengths differ."""
    directory = str(tiny_hf_model_dir(family))
    rng = np.random.default_rng(0)
    if family == "bert":
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return dict(tokenizer(["a handwritten seven", "one"], padding=True, return_tensors="pt"))
    if TINY_HF_KINDS[family] == "image":
        images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2)]
        return {"pixel_values": AutoImageProcessor.from_pretrained(directory)(images, return_tensors="pt")["pixel_values"]}
    extractor = AutoFeatureExtractor.from_pretrained(directory)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (4000, 2400)]
    return dict(extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt"))


def build(family: str, **options) -> HFEncoder:
    cfg = ModalityConfig(kind=TINY_HF_KINDS[family], pretrained=str(tiny_hf_model_dir(family)), options=options)
    return build_encoder(cfg).eval()


def reference(family: str, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [B, N, D], mask [B, N], pooled [B, D] computed with the HF model directly."""
    model = AutoModel.from_pretrained(str(tiny_hf_model_dir(family))).eval()
    with torch.no_grad():
        out = model(**inputs)
    hidden = out.last_hidden_state
    if hidden.dim() == 4:
        hidden = hidden.flatten(2).transpose(1, 2)
    if family == "wav2vec2":  # no pooler: masked mean over frames, with HF's own frame mask
        mask = model._get_feature_vector_attention_mask(hidden.shape[1], inputs["attention_mask"]).bool()
        return hidden, mask, masked_mean(hidden, mask)
    mask = inputs["attention_mask"].bool() if family == "bert" else torch.ones(hidden.shape[:2], dtype=torch.bool)
    return hidden, mask, out.pooler_output.flatten(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_the_hf_model_called_directly(family):
    encoder = build(family)
    inputs = hf_inputs(family)
    with torch.no_grad():
        out = encoder(inputs, torch.tensor([True, True]))
    tokens, mask, pooled = reference(family, inputs)
    assert encoder.kind == TINY_HF_KINDS[family] and encoder.output_dim == tokens.shape[-1]
    assert (out.tokens - tokens).abs().max() < TOLERANCE
    assert torch.equal(out.mask, mask)
    assert (out.pooled - pooled).abs().max() < TOLERANCE
    if family in ("bert", "wav2vec2"):  # the padded second sample really has fewer tokens
        assert out.mask[1].sum() < out.mask[0].sum()


@pytest.mark.parametrize("family", FAMILIES)
def test_config_only_rebuild_reproduces_the_architecture(family, tmp_path):
    encoder = build(family)
    encoder.save_hf_artifacts(tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").exists()
    assert not list((tmp_path / "hf").glob("*.safetensors")), "weights come from the polymodal model, not here"
    cfg = ModalityConfig(kind=TINY_HF_KINDS[family], pretrained=str(tmp_path / "hf"))
    torch.manual_seed(1)
    rebuilt = build_encoder(cfg, load_weights=False).eval()
    assert type(rebuilt.backbone) is type(encoder.backbone) and rebuilt.output_dim == encoder.output_dim
    inputs = hf_inputs(family)
    present = torch.tensor([True, True])
    with torch.no_grad():
        expected = encoder(inputs, present).pooled
        assert not torch.allclose(rebuilt(inputs, present).pooled, expected), "random init, not the checkpoint"
        rebuilt.load_state_dict(encoder.state_dict(), strict=True)
        assert (rebuilt(inputs, present).pooled - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("family", ["bert", "wav2vec2"])
def test_absent_sample_with_all_zero_attention_mask(family):
    encoder = build(family)
    inputs = {k: v.clone() for k, v in hf_inputs(family).items()}
    inputs["attention_mask"][1] = 0
    inputs[encoder.main_input_name][1] = 0
    out = encoder(inputs, torch.tensor([True, False]))
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert not out.mask[1].any() and torch.equal(out.pooled[1], torch.zeros(encoder.output_dim))
    out.pooled.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_pooling_options_and_hidden_layer():
    inputs = hf_inputs("bert")
    present = torch.tensor([True, True])
    with torch.no_grad():
        mean = build("bert", pooling="mean")(inputs, present)
        cls = build("bert", pooling="cls")(inputs, present)
        layer = build("bert", hidden_layer=-2)(inputs, present)
        model = AutoModel.from_pretrained(str(tiny_hf_model_dir("bert"))).eval()
        hidden_states = model(**inputs, output_hidden_states=True).hidden_states
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(mean.pooled, masked_mean(mean.tokens, mask))
    torch.testing.assert_close(cls.pooled, cls.tokens[:, 0])
    assert (layer.tokens - hidden_states[-2]).abs().max() < TOLERANCE
    with pytest.raises(ValueError, match="pooler_output"):
        build("wav2vec2", pooling="pooler")(hf_inputs("wav2vec2"), present)


def test_dual_tower_checkpoint_uses_the_tower_of_the_kind():
    directory = str(tiny_hf_model_dir("clip"))
    clip = AutoModel.from_pretrained(directory).eval()
    image = build_encoder(ModalityConfig(kind="image", pretrained=directory)).eval()
    text = build_encoder(ModalityConfig(kind="text", pretrained=directory)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 1]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    present = torch.tensor([True, True])
    with torch.no_grad():
        image_ref = clip.vision_model(pixel_values=pixels)
        text_ref = clip.text_model(input_ids=ids, attention_mask=attention)
        image_out = image({"pixel_values": pixels}, present)
        text_out = text({"input_ids": ids, "attention_mask": attention}, present)
    assert (image_out.pooled - image_ref.pooler_output).abs().max() < TOLERANCE
    assert (text_out.tokens - text_ref.last_hidden_state).abs().max() < TOLERANCE
    assert not any(k.startswith("text_model") for k in image.state_dict()), "only the image tower is kept"


def test_gradient_checkpointing_gives_the_same_gradients():
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    inputs = hf_inputs("bert")
    grads = []
    for checkpointing in (False, True):
        encoder = build("bert", gradient_checkpointing=checkpointing, config_overrides=no_dropout).train()
        encoder(inputs, torch.tensor([True, True])).pooled.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_freeze_keeps_hf_weights_bit_identical():
    encoder = build("bert", config_overrides={"hidden_dropout_prob": 0.5}).freeze()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head = torch.nn.Linear(encoder.output_dim, 2)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=0.1)
    encoder.train()
    assert not encoder.backbone.training, "a frozen encoder stays in eval mode (no dropout)"
    head(encoder(hf_inputs("bert"), torch.tensor([True, True])).pooled).sum().backward()
    optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_missing_main_input_is_a_clear_error():
    with pytest.raises(KeyError, match="input_values"):
        build("wav2vec2")({"features": torch.zeros(1, 40, 10)}, torch.tensor([True]))
