"""PEFT on the native CLIP towers (clip_vision / clip_text): every adapter is really in the forward pass.

The towers' fast paths read layer weights directly (``linear(x, self.qkv.weight)``, the fused MLP, the patch
embedding as a matmul). A PEFT wrapper keeps ``.weight`` = the base weight, so those paths used to skip the
adapters silently: LoRA on a CLIP tower trained nothing. These tests fail if any adapted layer is bypassed.
"""

from __future__ import annotations

import pytest
import torch

from polymodal.config.finetune import PromptSettings, parse_finetune_config
from polymodal.peft import merge_adapters
from polymodal.peft.lora import inject_peft
from polymodal.peft.prompt import add_prompt_tuning
from polymodal.registry import ENCODERS

PRESENT = torch.ones(3, dtype=torch.bool)


def tower(name: str):
    torch.manual_seed(0)
    options = {"preset": "tiny", **({"image_size": 32} if name == "clip_vision" else {})}
    return ENCODERS.build(name, **options)


def tower_inputs(name: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    if name == "clip_vision":
        return {"pixel_values": torch.randn(3, 3, 32, 32, generator=gen)}
    ids = torch.randint(3, 90, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0  # right padding, as CLIP tokenizers pad
    return {"input_ids": ids * mask, "attention_mask": mask}


def projected(out) -> torch.Tensor:
    # a random read-out: the sum of LayerNorm outputs (ln_post / ln_final) has zero gradient by construction
    weights = torch.randn(out.pooled.shape, generator=torch.Generator().manual_seed(2))
    return (out.pooled * weights).sum() + (out.tokens * out.mask.unsqueeze(-1)).pow(2).mean()


@pytest.mark.parametrize("name", ["clip_vision", "clip_text"])
@pytest.mark.parametrize("method", ["lora", "loha", "ia3"])
def test_every_adapter_of_a_clip_tower_gets_a_gradient(name, method):
    encoder = tower(name)
    targets = inject_peft(encoder, method, parse_finetune_config(method), name)
    # every Linear of every block (qkv, out_proj, fc1, fc2) and, for images, the patch embedding
    assert {t.rsplit(".", 1)[-1] for t in targets} >= {"qkv", "out_proj", "fc1", "fc2"}
    assert name == "clip_text" or "tower.patch_embed" in targets
    projected(encoder(tower_inputs(name), PRESENT)).backward()
    trained = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trained and all(".base_layer." not in n for n, _ in trained)
    # Each adapted layer has a parameter with a gradient in the first step (the factors multiplying a
    # zero-initialised one, LoRA's A and LoHa's w1 / w2_a, get theirs once it moves off zero).
    reached = {n.split(".lora_")[0].split(".hada_")[0].split(".ia3_")[0] for n, p in trained
               if p.grad is not None and p.grad.any()}
    silent = sorted(set(targets) - reached)
    assert not silent, f"adapters bypassed by the forward pass: {silent}"


@pytest.mark.parametrize("name", ["clip_vision", "clip_text"])
def test_lora_merge_parity_and_pooled_shortcut_on_clip_towers(name):
    encoder = tower(name).eval()
    inputs = tower_inputs(name)
    with torch.no_grad():
        base = encoder(inputs, PRESENT).pooled
    inject_peft(encoder, "lora", parse_finetune_config({"default": "lora", "lora": {"r": 2}}), name)
    with torch.no_grad():
        for pname, param in encoder.named_parameters():
            if "lora_B" in pname:
                param.normal_(0, 0.5)  # a trained adapter: non-zero update
        adapted = encoder(inputs, PRESENT).pooled
        # the one-query shortcut of the last block (CLIPModelNative.encode_*) sees the adapters too
        if name == "clip_text":
            pooled = encoder.tower.forward_pooled(inputs["input_ids"], inputs["attention_mask"])
        else:
            pooled = encoder.tower.forward_pooled(inputs["pixel_values"])
    assert (adapted - base).abs().max() > 1e-3  # the update changes the output (it is not bypassed)
    torch.testing.assert_close(pooled, adapted, atol=1e-5, rtol=0)
    holder = torch.nn.Module()
    holder.encoders = torch.nn.ModuleDict({name: encoder})
    merge_adapters(holder)
    assert type(encoder.tower.transformer.blocks[0].qkv) is torch.nn.Linear  # plain again: fast paths back
    with torch.no_grad():
        merged = encoder(inputs, PRESENT).pooled
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["clip_vision", "clip_text"])
def test_prompt_tuning_on_clip_towers_keeps_the_token_grid(name):
    encoder = tower(name).eval()
    inputs = tower_inputs(name)
    with torch.no_grad():
        plain = encoder(inputs, PRESENT)
    prompts = add_prompt_tuning(encoder, PromptSettings(num_tokens=3, init_std=0.5), name)
    out = encoder(inputs, PRESENT)
    assert out.tokens.shape == plain.tokens.shape and torch.equal(out.mask, plain.mask)
    assert (out.pooled - plain.pooled).abs().max() > 1e-4  # every token attends to the prompts
    projected(out).backward()
    assert prompts.grad is not None and prompts.grad.any()
    assert [n for n, p in encoder.named_parameters() if p.requires_grad] == ["prompt_embeddings"]
    if name == "clip_text":  # causal: a token never sees the tokens after it, prompts or not
        changed = dict(inputs, input_ids=inputs["input_ids"].clone())
        changed["input_ids"][:, -1] = 5
        with torch.no_grad():
            again = encoder(changed, PRESENT)
        torch.testing.assert_close(again.tokens[:, :-1], out.tokens.detach()[:, :-1], atol=1e-6, rtol=0)


def test_prompt_tuned_clip_text_with_left_padding_matches_the_unpadded_rows():
    """Left padding makes the text tower build an explicit [B, 1, L, L] mask (instead of is_causal); the prompts
    extend it. A full-length row must come out the same whichever path its batch took."""
    encoder = tower("clip_text").eval()
    add_prompt_tuning(encoder, PromptSettings(num_tokens=2, init_std=0.5), "clip_text")
    ids = torch.randint(3, 90, (2, 8), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0  # left padding: the explicit-mask path
    with torch.no_grad():
        batched = encoder({"input_ids": ids * mask, "attention_mask": mask}, torch.ones(2, dtype=torch.bool))
        alone = encoder({"input_ids": ids[:1], "attention_mask": mask[:1]}, torch.ones(1, dtype=torch.bool))
    torch.testing.assert_close(batched.tokens[:1], alone.tokens, atol=1e-5, rtol=0)
    assert torch.isfinite(batched.tokens).all()  # pads see themselves and the prompts: no empty attention row
