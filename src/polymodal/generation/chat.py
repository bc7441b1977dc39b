"""Text of one sample → token ids + labels, with the loss only on answer tokens.

A sample is a conversation, ``messages = [{"role": "system" | "user" | "assistant", "content": ...}, ...]``
(content: a string, or Hugging Face-style parts ``[{"type": "image"}, {"type": "text", "text": "..."}]``), or a
``prompt`` + ``answer`` pair, which becomes ``[user: prompt, assistant: answer]``.

With a chat template (``tokenizer.apply_chat_template``), the assistant turns are found by rendering prefixes of
the conversation: turn i's answer is the text between ``render(messages[:i], add_generation_prompt=True)`` and
``render(messages[:i+1])``. That works for any prefix-stable template (every common one), needs no special
markup in the template, and includes what the template puts after the answer (the eos token), so the model
learns to stop. Tokens whose character span starts inside an answer get labels; all others get -100.

Without a template (``use_chat_template=False``): ``bos + prompt`` is the prompt and ``answer + eos`` the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data.errors import DataError

IGNORE_INDEX = -100  # the label PyTorch's cross_entropy skips (ignore_index default)
ROLES = ("system", "user", "assistant")


@dataclass
class EncodedText:
    """input_ids and labels (same length; -100 where no loss) of one sample."""

    input_ids: list[int]
    labels: list[int]


def sample_messages(sample: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The conversation of a sample (``messages``, or ``prompt`` [+ ``answer``]), validated."""
    if "messages" in sample:
        messages = sample["messages"]
    elif "prompt" in sample:
        messages = [{"role": "user", "content": sample["prompt"]}]
        if sample.get("answer") is not None:
            messages.append({"role": "assistant", "content": sample["answer"]})
    else:
        raise DataError(f"{where}: has neither 'messages' nor 'prompt'; give a conversation or a prompt (+ answer)")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise DataError(f"{where}: messages[{i}] must be {{'role': one of {list(ROLES)}, 'content': ...}}, "
                            f"got {message!r}")
        content = message["content"]
        if not isinstance(content, (str, list)):
            raise DataError(f"{where}: messages[{i}].content must be a string or a list of parts, got "
                            f"{type(content).__name__}")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str) or (
                    part["type"] == "text" and not isinstance(part.get("text"), str)):
                raise DataError(f"{where}: messages[{i}].content[{j}] must be {{'type': 'text', 'text': str}} or "
                                f"{{'type': 'image' | 'audio' | ...}}, got {part!r}")
    return messages


def _content_text(content: str | list[dict[str, Any]]) -> str:
    """Plain-mode text of a content (parts joined; a non-text part becomes its ``<type>`` placeholder)."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] if part["type"] == "text" else f"<{part['type']}>" for part in content)


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def encode_messages(tokenizer: Any, messages: list[dict[str, Any]], *, for_generation: bool,
                    use_chat_template: bool = True, where: str = "sample") -> EncodedText:
    """Token ids + labels for training (``for_generation=False``: the conversation must contain an assistant
    turn) or the prompt ids for generation (``for_generation=True``: the conversation must end with a user or
    system turn; labels are all -100). Raises DataError naming ``where`` otherwise."""
    last = messages[-1]["role"]
    if for_generation and last == "assistant":
        raise DataError(f"{where}: a generation prompt must end with a user turn, not an assistant answer; drop "
                        f"the answer (or leave 'answer' empty)")
    if not for_generation and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant turn, so nothing to learn; give an 'answer' or an assistant message")
    if not use_chat_template:
        return _encode_plain(tokenizer, messages, for_generation, where)
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{where}: the tokenizer has no chat template; call decoders.prepare_tokenizer(tokenizer) "
                        f"or set use_chat_template: false")
    if for_generation:
        text = _render(tokenizer, messages, True)
        return _tokenize_spans(tokenizer, text, [])
    text = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else _generation_prefix(tokenizer, messages)
        through = _render(tokenizer, messages[: i + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise DataError(f"{where}: the tokenizer's chat template is not prefix-stable (rendering the first {i} "
                            f"turns is not a prefix of the whole conversation), so answer tokens cannot be located; "
                            f"use a template that renders turns in order, e.g. decoders.DEFAULT_CHAT_TEMPLATE")
        spans.append((len(before), len(through)))
    return _tokenize_spans(tokenizer, text, spans)


def _generation_prefix(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """What a template renders before a conversation's first message when that message is the assistant's:
    the text of a one-message conversation up to the message's content."""
    try:
        return _render(tokenizer, [], True)
    except Exception:  # some templates refuse an empty conversation
        pass
    probe = "\x00polymodal-probe\x00"
    rendered = _render(tokenizer, [{"role": "assistant", "content": probe}], False)
    return rendered.split(probe, 1)[0] if probe in rendered else ""


def _tokenize_spans(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> EncodedText:
    # the template already wrote bos / eos; add_special_tokens=False keeps the tokenizer from adding them twice
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for k, (start, _end) in enumerate(encoded["offset_mapping"]):
        if any(lo <= start < hi for lo, hi in spans):
            labels[k] = ids[k]
    return EncodedText(ids, labels)


def _encode_plain(tokenizer: Any, messages: list[dict[str, Any]], for_generation: bool, where: str) -> EncodedText:
    if len(messages) > 2 or messages[0]["role"] != "user":
        raise DataError(f"{where}: without a chat template a sample is one prompt (+ one answer); got {len(messages)} "
                        f"messages. Set use_chat_template: true for conversations")
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids += tokenizer(_content_text(messages[0]["content"]), add_special_tokens=False)["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    if not for_generation:
        answer = tokenizer(_content_text(messages[1]["content"]), add_special_tokens=False)["input_ids"]
        answer = list(answer) + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        ids += answer
        labels += answer
    return EncodedText(list(ids), labels)
