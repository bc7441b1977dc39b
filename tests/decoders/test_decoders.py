"""Decoders: Hugging Face checkpoints (tiny GPT-2 / Llama saved to a temp dir), tiny presets, LoRA, no remote code."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from polymodal.config import ConfigError
from polymodal.decoders import (
    apply_lora,
    build_tiny_decoder,
    causal_lm_from_config,
    is_peft_model,
    load_causal_lm,
    merge_lora,
    train_tokenizer,
)

TEXTS = ["a handwritten seven", "what digit is this?", "a red square", "yes", "no"]
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_tiny_preset_is_a_hugging_face_llama(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = build_tiny_decoder(tokenizer, **SMALL).eval()
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.pad_token_id == tokenizer.pad_token_id
    model.save_pretrained(str(tmp_path))
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path), trust_remote_code=False).eval()
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.equal(model(ids).logits, again(ids).logits)
    generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, again.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0))


def test_presets_errors(tokenizer):
    with pytest.raises(ConfigError, match="Did you mean 'tiny-llama'"):
        build_tiny_decoder(tokenizer, "tiny-lama")
    with pytest.raises(ConfigError, match="model_type 'mystery'"):
        causal_lm_from_config({"model_type": "mystery"})


def save_gpt2(directory, vocab: int = 300):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(str(directory))
    return model


def save_llama(directory, tokenizer):
    torch.manual_seed(0)
    model = build_tiny_decoder(tokenizer, **SMALL).eval()
    model.save_pretrained(str(directory))
    return model


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_load_causal_lm_from_a_directory_matches_the_saved_model(family, tokenizer, tmp_path):
    original = save_gpt2(tmp_path) if family == "gpt2" else save_llama(tmp_path, tokenizer)
    loaded = load_causal_lm(tmp_path)
    assert type(loaded) is type(original) and not loaded.training
    ids = torch.tensor([[3, 50, 60, 70]])
    assert torch.equal(loaded(ids).logits, original(ids).logits)


def test_checkpoint_needing_its_own_code_is_refused_and_never_run(tmp_path, monkeypatch):
    save_gpt2(tmp_path)
    marker = tmp_path / "ran.txt"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="plantedlm", auto_map={"AutoConfig": "planted.Config",
                                                      "AutoModelForCausalLM": "planted.Model"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="never runs code from a model directory"):
        load_causal_lm(tmp_path)
    with pytest.raises(ConfigError, match="plantedlm"):
        causal_lm_from_config(config)
    assert not marker.exists()


def test_auto_map_on_a_builtin_architecture_is_ignored(tmp_path):
    original = save_gpt2(tmp_path)
    marker = tmp_path / "ran.txt"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "planted.Model"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_causal_lm(tmp_path)
    assert isinstance(loaded, GPT2LMHeadModel) and not marker.exists()
    assert torch.equal(loaded(torch.tensor([[1, 2]])).logits, original(torch.tensor([[1, 2]])).logits)


def test_missing_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load the causal language model"):
        load_causal_lm(tmp_path / "nothing-here")


def test_lora_merge_gives_identical_outputs(tokenizer):
    torch.manual_seed(0)
    base = build_tiny_decoder(tokenizer, **SMALL).eval()
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    before = base(ids).logits.clone()
    # init_lora_weights=False: B is random, so the adapters really change the function
    peft_model = apply_lora(base, r=4, alpha=8, init_lora_weights=False).eval()
    assert is_peft_model(peft_model)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    adapted = peft_model(ids).logits.clone()
    assert not torch.allclose(adapted, before, atol=1e-4)
    greedy = peft_model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    merged = merge_lora(peft_model).eval()
    assert not is_peft_model(merged) and isinstance(merged, LlamaForCausalLM)
    assert torch.allclose(merged(ids).logits, adapted, atol=1e-5)
    assert torch.equal(merged.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0), greedy)
