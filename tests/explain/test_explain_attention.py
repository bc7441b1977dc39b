"""Captured attention weights (hooks) are the ones the modules use; attention rollout (Abnar & Zuidema 2020)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_toy import AUDIO_CNN, IMAGE_VIT, TEXT, build_model

from polymodal.encoders.layers import SelfAttention
from polymodal.explain import AttentionRecorder, attention_rollout, cls_patch_map, hf_attentions
from polymodal.explain.attention import multi_head_attention_weights, self_attention_weights
from polymodal.fusion.attention import MultiHeadAttention
from polymodal.inference.predictor import Predictor

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, (8, 8), dtype=np.uint8)
AUDIO = ((RNG.normal(size=3000) * 0.1).astype(np.float32), 8000)


def test_self_attention_weights_reproduce_the_module_output():
    torch.manual_seed(0)
    module = SelfAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, True, False, False], [False] * 5])  # the second sample: no real key
    weights = self_attention_weights(module, x, mask)
    assert weights.shape == (2, 4, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 5), atol=1e-6)
    assert weights[0, :, :, 3:].abs().max() == 0  # masked keys get nothing
    value = module.qkv(x).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)[2]
    rebuilt = module.proj((weights @ value).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(rebuilt, module(x, mask), atol=1e-5)


def test_multi_head_attention_weights_reproduce_the_module_output():
    torch.manual_seed(0)
    module = MultiHeadAttention(16, 2).eval()
    query, context = torch.randn(3, 4, 16), torch.randn(3, 6, 16)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False], [False] * 6])
    weights = multi_head_attention_weights(module, query, context, mask)
    assert torch.allclose(weights[:2].sum(-1), torch.ones(2, 2, 4), atol=1e-6)
    assert weights[2].abs().max() == 0  # no key at all: the module outputs zeros, the map is zeros
    _, value = module.key_value(context).chunk(2, dim=-1)
    value = value.view(3, 6, 2, 8).transpose(1, 2)
    rebuilt = module.out((weights @ value).transpose(1, 2).reshape(3, 4, 16)) * torch.tensor([1.0, 1.0, 0.0])[:, None, None]
    assert torch.allclose(rebuilt, module(query, context, mask), atol=1e-5)


def test_rollout_rows_sum_to_one_and_follow_the_definition():
    torch.manual_seed(0)
    layers = [torch.rand(2, 3, 6, 6).softmax(-1) for _ in range(4)]
    rollout = attention_rollout(layers)
    assert rollout.shape == (2, 6, 6)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, 6), atol=1e-6)
    expected = torch.eye(6).expand(2, 6, 6)
    for weights in layers:  # Abnar & Zuidema: Â = 0.5 A + 0.5 I per layer, multiplied bottom-up
        expected = (0.5 * weights.mean(1) + 0.5 * torch.eye(6)) @ expected
    assert torch.allclose(rollout, expected, atol=1e-6)
    # uniform attention in every layer: rollout of one layer is 0.5 I + 0.5 / N
    uniform = attention_rollout([torch.full((1, 1, 4, 4), 0.25)])
    assert torch.allclose(uniform[0], 0.5 * torch.eye(4) + 0.125, atol=1e-6)
    with pytest.raises(ValueError, match="no attention layers"):
        attention_rollout([])


def test_cls_patch_map_reads_the_cls_row_over_the_grid():
    rollout = torch.zeros(5, 5)
    rollout[0] = torch.tensor([0.2, 0.4, 0.2, 0.1, 0.1])
    grid = cls_patch_map(rollout)
    assert grid.shape == (2, 2)
    assert torch.allclose(grid, torch.tensor([[0.5, 0.25], [0.125, 0.125]]))
    with pytest.raises(ValueError, match="square patch grid"):
        cls_patch_map(torch.eye(8))


def test_recorder_captures_encoder_and_fusion_attention_and_leaves_the_model_unchanged():
    model = build_model({"image": IMAGE_VIT, "audio": AUDIO_CNN, "text": TEXT}, fusion="transformer")
    batch = Predictor(model).make_batch([{"image": IMAGE, "audio": AUDIO, "text": "a handwritten seven"}])
    with torch.no_grad():
        before = model(batch).logits
    with AttentionRecorder(model) as recorder, torch.no_grad():
        during = model(batch).logits
    assert torch.equal(before, during)
    modules = [m.module for m in recorder.maps]
    assert modules == ["encoders.image.transformer.blocks.0.attn", "encoders.text.transformer.blocks.0.attn",
                       "fusion.blocks.0.attn"]
    for amap in recorder.maps:
        assert torch.allclose(amap.weights.sum(-1), torch.ones(amap.weights.shape[:-1]), atol=1e-5)
    image_layers = [m.weights for m in recorder.under("encoders.image.")]
    assert image_layers[0].shape == (1, 2, 17, 17)  # CLS + 4×4 patches of 2 px
    rollout = attention_rollout(image_layers)
    assert torch.allclose(rollout.sum(-1), torch.ones(1, 17), atol=1e-6)
    assert not model.encoders["image"].transformer.blocks[0].attn._forward_hooks  # hooks removed


def test_cross_attention_maps_zero_out_an_absent_partner():
    model = build_model({"image": IMAGE_VIT, "text": TEXT}, fusion="cross_attention")
    batch = Predictor(model).make_batch([{"image": IMAGE}])  # text absent
    with AttentionRecorder(model) as recorder, torch.no_grad():
        model(batch)
    cross = {m.module: m.weights for m in recorder.under("fusion.") if m.module.endswith("cross")}
    assert set(cross) == {"fusion.streams.0.0.cross", "fusion.streams.1.0.cross"}
    assert cross["fusion.streams.0.0.cross"].abs().max() == 0  # image queries: no text key to attend to


def test_hf_vit_attentions_and_rollout():
    from hf_fixtures import tiny_hf_model_dir

    from polymodal.config import ModalityConfig
    from polymodal.encoders import build_encoder

    encoder = build_encoder(ModalityConfig(kind="image", pretrained=str(tiny_hf_model_dir("vit")))).eval()
    kernel = encoder.backbone.config._attn_implementation
    pixels = torch.randn(1, 3, 32, 32)
    layers = hf_attentions(encoder, {"pixel_values": pixels})
    assert len(layers) == 2 and layers[0].shape[-2:] == (17, 17)
    assert encoder.backbone.config._attn_implementation == kernel  # the kernel is restored
    rollout = attention_rollout(layers)
    assert torch.allclose(rollout.sum(-1), torch.ones(1, 17), atol=1e-5)
    assert cls_patch_map(rollout[0]).shape == (4, 4)
