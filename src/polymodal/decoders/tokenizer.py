"""A tokenizer for the tiny decoder presets, trained with Hugging Face ``tokenizers``, and chat formatting.

``train_tokenizer`` trains a byte-level BPE (GPT-2's scheme: every byte is in the base alphabet, so no text is
ever unknown, including unicode) on the given training texts and wraps it as a ``PreTrainedTokenizerFast``
with the special tokens polymodal's generation models use and :data:`DEFAULT_CHAT_TEMPLATE`.
``prepare_tokenizer`` gives a pretrained checkpoint's tokenizer the same placeholders (and the default template
when it has none).

Default chat template (Jinja, rendered by ``tokenizer.apply_chat_template``)::

    <|bos|><|system|>\\n{system text}<|eos|><|user|>\\n{user text}<|eos|><|assistant|>\\n{answer}<|eos|>...

Each message is ``<|role|>``, a newline, its content, then the eos token; ``add_generation_prompt=True`` ends
with ``<|assistant|>\\n``. Content is a string (which may hold ``<image>`` / ``<audio>`` placeholders) or a list
of Hugging Face-style parts: ``{"type": "text", "text": ...}``, ``{"type": "image"}``, ``{"type": "audio"}``
(a non-text part renders as ``<type>``). Answers end with eos, so a model trained on them learns to stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import ConfigError
from ..data.errors import DataError

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- else -%}{{- '<' + part['type'] + '>' -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- eos_token -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 1,
                    placeholders: Iterable[str] = tuple(PLACEHOLDERS.values())) -> Any:
    """Byte-level BPE trained on ``texts`` → ``PreTrainedTokenizerFast`` with bos/eos/pad, placeholders, role tokens
    and :data:`DEFAULT_CHAT_TEMPLATE`.

    ``vocab_size`` counts the 256 base bytes and the special tokens, so it must exceed 256 + their number
    (merges fill the rest; fewer when the texts do not support that many). Raises DataError for empty or
    non-string training texts and ConfigError for a too-small ``vocab_size``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts)
    if not corpus:
        raise DataError("train_tokenizer: no training texts; pass the captions / answers / conversations to learn from")
    bad = [i for i, text in enumerate(corpus) if not isinstance(text, str)]
    if bad:
        raise DataError(f"train_tokenizer: training text {bad[0]} is {type(corpus[bad[0]]).__name__}, not a string")
    placeholders = list(placeholders)
    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *placeholders, *ROLE_TOKENS]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(alphabet) + len(specials):
        raise ConfigError(f"train_tokenizer: vocab_size must be an integer > {len(alphabet) + len(specials)} "
                         f"(256 bytes + {len(specials)} special tokens), got {vocab_size!r}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN)
    # registered as special so decode(skip_special_tokens=True) drops them and they never split
    fast.add_special_tokens({"additional_special_tokens": [*placeholders, *ROLE_TOKENS]})
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def prepare_tokenizer(tokenizer: Any, placeholders: Iterable[str] = tuple(PLACEHOLDERS.values()),
                      chat_template: str | None = None) -> int:
    """Make a pretrained tokenizer usable by a vision-language model, in place; return how many tokens were added.

    Adds each placeholder as a special token (one id, never split) when missing; uses eos as the pad token when
    the tokenizer has none (GPT-2); sets ``chat_template`` (default :data:`DEFAULT_CHAT_TEMPLATE`) when the
    tokenizer has no template. After adding tokens, resize the decoder (:func:`resize_decoder`).
    """
    vocab = tokenizer.get_vocab()
    missing = [token for token in placeholders if token not in vocab]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DataError("tokenizer has neither a pad nor an eos token; give it one (tokenizer.add_special_tokens)")
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template or DEFAULT_CHAT_TEMPLATE
    return int(added)


def resize_decoder(decoder: Any, tokenizer: Any) -> None:
    """Grow the decoder's token embeddings (and tied LM head) to ``len(tokenizer)`` when the tokenizer is larger."""
    if len(tokenizer) > decoder.get_input_embeddings().num_embeddings:
        decoder.resize_token_embeddings(len(tokenizer))
