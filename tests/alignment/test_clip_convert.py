"""Native CLIP ↔ Hugging Face CLIPModel / open_clip: same weights, same embeddings.

Reference: a randomly initialised tiny ``transformers.CLIPModel`` (offline). The real open_clip comparison runs
only when the ``open_clip`` package is importable (it is not in the dev environment: it needs torchvision);
the open_clip key layout itself is always tested through an HF → open_clip-layout → native round trip.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from polymodal.encoders.clip_convert import (
    from_hf_clip,
    from_open_clip_state_dict,
    hf_state_dict_to_native,
    native_state_dict_to_hf,
    native_state_dict_to_open_clip,
    open_clip_config_from_state_dict,
    save_hf_clip,
    to_hf_clip,
)
from polymodal.encoders.clip_towers import (
    CLIPModelNative,
    CLIPNativeConfig,
)
from polymodal.registry import ENCODERS

VOCAB, EOS, CONTEXT = 99, 98, 12
TOL = 1e-4


def tiny_hf_clip(act: str = "quick_gelu", eos_token_id: int = EOS) -> CLIPModel:
    common = dict(hidden_act=act, layer_norm_eps=1e-5)
    config = CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CONTEXT, eos_token_id=eos_token_id,
                         bos_token_id=97, pad_token_id=0, **common),
        vision_config=dict(hidden_size=48, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, **common),
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # HF zero-inits biases and uses unit LayerNorms: perturb so every tensor matters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def inputs(batch: int = 3, eos: int = EOS):
    """pixels [B, 3, 32, 32]; right-padded ids [B, L] with BOS … EOS then pads (one sample fills the context)."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, 32, 32, generator=g)
    lengths = [CONTEXT, 5, 8][:batch]
    ids = torch.zeros(batch, CONTEXT, dtype=torch.long)
    mask = torch.zeros(batch, CONTEXT, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, 90, (n,), generator=g)
        ids[row, 0], ids[row, n - 1] = 97, eos
        mask[row, :n] = 1
    return pixels, ids, mask


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_from_hf_matches_hf_embeddings(act):
    hf = tiny_hf_clip(act)
    native = from_hf_clip(hf).eval()
    pixels, ids, mask = inputs()
    with torch.no_grad():
        hf_img = hf.get_image_features(pixel_values=pixels).pooler_output
        hf_txt = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        assert max_diff(native.encode_image(pixels), hf_img) <= TOL
        assert max_diff(native.encode_text(ids, mask), hf_txt) <= TOL
        img, txt, scale = native(pixels, ids, mask)
        out = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    assert max_diff(img, out.image_embeds) <= TOL and max_diff(txt, out.text_embeds) <= TOL
    assert max_diff(scale * txt @ img.t(), out.logits_per_text) <= 1e-3


def test_legacy_argmax_pooling_matches_hf():
    # HF switches to argmax pooling when eos_token_id == 2; ids then carry their EOT as the largest id.
    hf = tiny_hf_clip(eos_token_id=2)
    native = from_hf_clip(hf).eval()
    assert native.config.text_pool == "argmax"
    _, ids, mask = inputs(eos=VOCAB - 1)
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        assert max_diff(native.encode_text(ids, mask), ref) <= TOL


def test_full_token_paths_match_hf_hidden_states():
    """Encoder paths (all tokens, no last-block shortcut) against HF, including left padding."""
    hf = tiny_hf_clip()
    native = from_hf_clip(hf).eval()
    pixels, ids, mask = inputs()
    with torch.no_grad():
        vis = hf.vision_model(pixel_values=pixels)
        tokens = native.visual(pixels)
        assert max_diff(native.visual.ln_post(native.visual.transformer(native.visual.embed(pixels))), tokens) == 0
        assert max_diff(tokens[:, 0], vis.pooler_output) <= TOL
        for ids_, mask_ in ((ids, mask), (ids.flip(1), mask.flip(1))):  # right, then left padding
            ref = hf.text_model(input_ids=ids_, attention_mask=mask_).last_hidden_state
            ours = native.text(ids_, mask_)
            real = mask_.bool()
            assert max_diff(ours[real], ref[real]) <= TOL
        left_pooled = native.text.forward_pooled(ids.flip(1), mask.flip(1))
        assert max_diff(left_pooled, hf.text_model(input_ids=ids.flip(1), attention_mask=mask.flip(1)).pooler_output) <= TOL


def test_round_trip_native_hf_native(tmp_path):
    native = CLIPModelNative(CLIPNativeConfig.tiny()).eval()
    hf = to_hf_clip(native)
    save_hf_clip(native, tmp_path / "clip")
    again = from_hf_clip(tmp_path / "clip").eval()
    for key, value in native.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert set(native_state_dict_to_hf(native.state_dict(), native.config)) == set(
        k for k in hf.state_dict() if not k.endswith("position_ids"))
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    ids = torch.randint(1, 99, (2, 16), generator=g)
    ids[:, 10] = 99  # tiny preset: eos_token_id 99
    with torch.no_grad():
        assert max_diff(hf.get_image_features(pixel_values=pixels).pooler_output, native.encode_image(pixels)) <= TOL
        assert max_diff(hf.get_text_features(input_ids=ids).pooler_output, native.encode_text(ids)) <= TOL


def test_open_clip_layout_round_trip_without_package():
    hf = tiny_hf_clip()
    native = from_hf_clip(hf)
    oc_state = native_state_dict_to_open_clip(native.state_dict(), native.config)
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in oc_state
    assert oc_state["visual.proj"].shape == (48, 24) and oc_state["text_projection"].shape == (32, 24)
    # Heads are not stored in a state dict: open_clip's default is width // 64, here they are given.
    config = open_clip_config_from_state_dict(oc_state, act="quick_gelu", vision_heads=4, text_heads=4)
    expected = {**native.config.to_dict(), "text_pool": "argmax", "eos_token_id": VOCAB - 1,
                "logit_scale_init": config.logit_scale_init}  # an init value, not stored in weights
    assert config.to_dict() == expected
    back = from_open_clip_state_dict({**oc_state, "attn_mask": torch.zeros(1)}, config).eval()
    pixels, ids, mask = inputs(eos=VOCAB - 1)  # open_clip pools at the largest id
    with torch.no_grad():
        assert max_diff(back.encode_image(pixels), hf.get_image_features(pixel_values=pixels).pooler_output) <= TOL
        ref = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        assert max_diff(back.encode_text(ids, mask), ref) <= TOL


def test_open_clip_package_parity():
    open_clip = pytest.importorskip("open_clip")  # not installed in the dev env (needs torchvision)
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    ref = CLIP(embed_dim=24, vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=16, image_size=32, patch_size=8),
               text_cfg=CLIPTextCfg(context_length=CONTEXT, vocab_size=VOCAB, width=32, heads=4, layers=2),
               quick_gelu=True).eval()
    assert open_clip is not None
    config = open_clip_config_from_state_dict(ref.state_dict(), act="quick_gelu", text_heads=4)
    native = from_open_clip_state_dict(ref.state_dict(), config).eval()
    pixels, ids, _ = inputs(eos=VOCAB - 1)
    with torch.no_grad():
        assert max_diff(native.encode_image(pixels), ref.encode_image(pixels)) <= TOL
        assert max_diff(native.encode_text(ids), ref.encode_text(ids)) <= TOL


def test_bad_state_dict_names_the_key():
    hf = tiny_hf_clip()
    state = hf.state_dict()
    config = from_hf_clip(hf).config
    del state["vision_model.pre_layrnorm.weight"]
    with pytest.raises(KeyError, match="pre_layrnorm.weight"):
        hf_state_dict_to_native(state, config)
    with pytest.raises(KeyError, match="extra.weight"):
        hf_state_dict_to_native({**hf.state_dict(), "extra.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match=r"pixel_values must be \[B, 3, 32, 32\]"):
        from_hf_clip(hf).encode_image(torch.zeros(1, 3, 16, 16))


def test_registered_encoders_follow_the_contract(tmp_path):
    hf = tiny_hf_clip()
    hf.save_pretrained(tmp_path / "clip")
    pixels, ids, mask = inputs()
    present = torch.tensor([True, False, True])
    vision = ENCODERS.build("clip_vision", pretrained=str(tmp_path / "clip"), project=True).eval()
    text = ENCODERS.get("clip_text")(pretrained=str(tmp_path / "clip"), project=True).eval()
    assert (vision.kind, text.kind, vision.output_dim, text.output_dim) == ("image", "text", 24, 24)
    with torch.no_grad():
        img = vision({"pixel_values": pixels}, present)
        txt = text({"input_ids": ids, "attention_mask": mask}, present)
        ref_img = hf.get_image_features(pixel_values=pixels).pooler_output
        ref_txt = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    assert img.tokens.shape == (3, 17, 24) and txt.tokens.shape == (3, CONTEXT, 24)
    assert max_diff(img.pooled[present], ref_img[present]) <= TOL
    assert max_diff(txt.pooled[present], ref_txt[present]) <= TOL
    assert not img.pooled[1].any() and not txt.mask[1].any() and torch.equal(txt.mask[0], mask[0].bool())
    tiny = ENCODERS.build("clip_vision", preset="tiny", gradient_checkpointing=True)
    out = tiny({"pixel_values": pixels}, torch.ones(3, dtype=torch.bool))
    out.pooled.sum().backward()
    assert tiny.tower.patch_embed.weight.grad is not None and out.pooled.shape == (3, 64)


def test_training_step_gradients_match_hf():
    """Gradients of the symmetric InfoNCE loss equal HF's (pooled-only shortcut and checkpointing are exact)."""
    hf = tiny_hf_clip()
    native = from_hf_clip(hf, gradient_checkpointing=True).train()
    hf.train()
    pixels, ids, mask = inputs()
    hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss.backward()
    img, txt, scale = native(pixels, ids, mask)
    logits = scale * img @ txt.t()
    labels = torch.arange(3)
    loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels)) / 2
    loss.backward()
    grads = hf_state_dict_to_native({k: p.grad for k, p in hf.named_parameters()}, native.config)
    for name, param in native.named_parameters():
        assert max_diff(param.grad, grads[name]) <= 1e-4, name
