"""The tiny presets' tokenizer: trained with Hugging Face ``tokenizers``, special tokens, default chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from polymodal.config import ConfigError
from polymodal.data.errors import DataError
from polymodal.decoders import DEFAULT_CHAT_TEMPLATE, prepare_tokenizer, train_tokenizer

TEXTS = ["a handwritten seven", "a red square left of a blue circle", "what digit is this?", "seven", "yes", "no"]


def test_special_tokens_are_single_ids_and_dropped_on_decode():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    for token in ("<image>", "<audio>", "<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"):
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    ids = tok("<image>\nwhat digit is this?<|eos|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "\nwhat digit is this?"
    assert len(tok) <= 300


@pytest.mark.parametrize("text", ["a handwritten seven", "unseen words: zebra quokka", "héllo wörld 日本語 🙂", ""])
def test_byte_level_round_trip_includes_unseen_and_unicode_text(text):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_training_merges_frequent_words():
    tok = train_tokenizer(TEXTS * 5, vocab_size=400)
    # a word of the training texts becomes far fewer tokens than bytes
    assert len(tok("seven", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("zqxjv", add_special_tokens=False)["input_ids"]) == 5


def test_default_chat_template_renders_documented_format():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nwhat digit?"}, {"type": "audio"}]},
        {"role": "assistant", "content": "seven"},
    ]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|bos|><|system|>\nbe brief<|eos|><|user|>\n<image>\nwhat digit?<audio><|eos|><|assistant|>\nseven<|eos|>"
    )
    assert tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True).endswith(
        "<audio><|eos|><|assistant|>\n"
    )


def test_save_and_reload_without_remote_code(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path), trust_remote_code=False)
    text = "<|user|>\n<image>what digit is this? 日本<|eos|>"
    assert again(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert again.chat_template == DEFAULT_CHAT_TEMPLATE
    assert again.convert_tokens_to_ids("<audio>") == tok.convert_tokens_to_ids("<audio>")


def test_bad_training_inputs_name_the_problem():
    with pytest.raises(DataError, match="no training texts"):
        train_tokenizer([])
    with pytest.raises(DataError, match="training text 1 is int"):
        train_tokenizer(["ok", 3])
    with pytest.raises(ConfigError, match="vocab_size must be an integer > 264"):
        train_tokenizer(TEXTS, vocab_size=100)


def test_prepare_tokenizer_adds_placeholders_pad_and_template_once():
    tok = train_tokenizer(TEXTS, vocab_size=300, placeholders=())
    tok.chat_template = None
    before = len(tok)
    assert len(tok("<image>", add_special_tokens=False)["input_ids"]) > 1
    assert prepare_tokenizer(tok) == 2
    assert len(tok) == before + 2
    assert len(tok("<image>", add_special_tokens=False)["input_ids"]) == 1
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    assert prepare_tokenizer(tok) == 0  # idempotent
