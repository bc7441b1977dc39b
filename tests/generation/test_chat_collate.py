"""Chat formatting and collation: labels only on answer tokens, placeholder accounting, attachment batching."""

from __future__ import annotations

import pytest
import torch

from polymodal.data.errors import DataError
from polymodal.generation import IGNORE_INDEX, GenerationCollator, encode_messages

from .vlm_fixtures import clip, image, tiny_tokenizer

PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}


def labelled_text(tokenizer, ids, labels) -> list[str]:
    """The contiguous labelled stretches, decoded with special tokens."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current)), current.clear()
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_only_the_answer_and_its_eos_are_labelled():
    tok = tiny_tokenizer()
    messages = [{"role": "user", "content": "<image>\nwhat is this?"}, {"role": "assistant", "content": "a red square"}]
    encoded = encode_messages(tok, messages, for_generation=False)
    assert tok.decode(encoded.input_ids) == "<|bos|><|user|>\n<image>\nwhat is this?<|eos|><|assistant|>\na red square<|eos|>"
    assert labelled_text(tok, encoded.input_ids, encoded.labels) == ["a red square<|eos|>"]


def test_every_assistant_turn_of_a_conversation_is_labelled_and_nothing_else():
    tok = tiny_tokenizer()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is it?"}]},
        {"role": "assistant", "content": "blue"},
        {"role": "user", "content": "is it round?"},
        {"role": "assistant", "content": "yes"},
    ]
    encoded = encode_messages(tok, messages, for_generation=False)
    assert labelled_text(tok, encoded.input_ids, encoded.labels) == ["blue<|eos|>", "yes<|eos|>"]
    prompt = encode_messages(tok, messages[:4], for_generation=True)
    assert tok.decode(prompt.input_ids).endswith("is it round?<|eos|><|assistant|>\n")
    assert set(prompt.labels) == {IGNORE_INDEX}


def test_plain_format_without_template():
    tok = tiny_tokenizer()
    messages = [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "a blue circle"}]
    encoded = encode_messages(tok, messages, for_generation=False, use_chat_template=False)
    assert tok.decode(encoded.input_ids) == "<|bos|><image>a blue circle<|eos|>"
    assert labelled_text(tok, encoded.input_ids, encoded.labels) == ["a blue circle<|eos|>"]
    with pytest.raises(DataError, match="without a chat template"):
        encode_messages(tok, messages * 2, for_generation=False, use_chat_template=False)


@pytest.mark.parametrize("sample, message", [
    ({"prompt": "<image> what is this?", "answer": "x"}, "holds 1 <image> placeholder.*0 image attachment"),
    ({"prompt": "what is this?", "answer": "x", "attachments": {"image": [image(0)]}}, "holds 0 <image>"),
    ({"prompt": "<image><image>", "answer": "x", "attachments": {"image": [image(0)]}}, "holds 2 <image>"),
    ({"prompt": "<audio>", "answer": "x", "attachments": {"audio": [image(0)], "video": [image(1)]}},
     r"attachments \['video'\] have no placeholder"),
    ({"prompt": "<image>", "answer": "x", "attachments": {"image": [torch.zeros(3)]}}, "must be a dict of tensors"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, r"messages\[0\] must be"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"text": "hi"}, "neither 'messages' nor 'prompt'"),
])
def test_bad_samples_name_the_sample_and_the_fix(sample, message):
    collator = GenerationCollator(tiny_tokenizer(), PLACEHOLDERS)
    with pytest.raises(DataError, match=message) as info:
        collator([{"prompt": "fine", "answer": "ok"}, {**sample, "id": "row-7"}])
    assert "sample row-7" in str(info.value)


def test_generation_collate_drops_answers_and_labels():
    tok = tiny_tokenizer()
    collator = GenerationCollator(tok, PLACEHOLDERS, for_generation=True)
    batch = collator([{"prompt": "what is this?", "answer": "a red square"}])
    assert batch.labels is None
    assert tok.decode(batch.input_ids[0]).endswith("what is this?<|eos|><|assistant|>\n")
    conversation = [{"role": "user", "content": "what is this?"}, {"role": "assistant", "content": "a red square"}]
    assert torch.equal(collator([{"messages": conversation}]).input_ids, batch.input_ids)  # the reference is dropped
    with pytest.raises(DataError, match="single assistant message"):
        collator([{"messages": conversation[1:]}])
    with pytest.raises(DataError, match="must end with a user turn"):
        encode_messages(tok, conversation, for_generation=True)


def test_attachments_concatenate_in_sample_order_and_pad_to_the_largest():
    collator = GenerationCollator(tiny_tokenizer(), PLACEHOLDERS)
    samples = [
        {"prompt": "<audio><image>", "answer": "a", "attachments": {"image": [image(0)], "audio": [clip(0, 5)]}},
        {"prompt": "no attachment", "answer": "b"},
        {"prompt": "<image> and <image>", "answer": "c", "attachments": {"image": [image(1), image(2)]}},
        {"prompt": "<audio>", "answer": "d", "attachments": {"audio": [clip(1, 3)]}},
    ]
    batch = collator(samples)
    assert batch.ids == ["0", "1", "2", "3"]
    pixels = batch.attachments["image"]["pixel_values"]
    assert pixels.shape == (3, 3, 8, 8)
    for k, seed in enumerate([0, 1, 2]):
        assert torch.equal(pixels[k], image(seed)["pixel_values"])
    audio = batch.attachments["audio"]
    assert audio["features"].shape == (2, 6, 5) and audio["feature_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert torch.equal(audio["features"][1, :, :3], clip(1, 3)["features"]) and (audio["features"][1, :, 3:] == 0).all()
    # right padded, mask marks the real tokens
    lengths = batch.attention_mask.sum(1)
    for b in range(4):
        assert batch.attention_mask[b, : lengths[b]].all() and not batch.attention_mask[b, lengths[b]:].any()
