"""Text processors: string → ``input_ids`` [L] long + ``attention_mask`` [L] long.

With ``pretrained`` set, the checkpoint's tokenizer (``AutoTokenizer``). Without it, a built-in tokenizer that
needs no files, so the from-scratch text encoder works offline:

- ``tokenizer="words"`` (default): lower-cased words and punctuation, each hashed (crc32, stable across
  processes and machines) into ``vocab_size - 4`` buckets;
- ``tokenizer="bytes"``: UTF-8 bytes (vocab 260), lossless for any language.

Special ids of the built-in tokenizers: pad 0, cls 1 (prepended), sep 2 (appended), unk 3.
Sequences are truncated to ``max_length``; ``padding="longest"`` pads in collate to the longest in the batch,
``"max_length"`` pads every sample to ``max_length``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..config import ModalityConfig
from .errors import DataError
from .processors import Processor, parse_options

PAD_ID, CLS_ID, SEP_ID, UNK_ID = 0, 1, 2, 3
NUM_SPECIAL = 4
_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class TextProcessorConfig:
    max_length: int = 64  # tokens, special tokens included
    padding: Literal["longest", "max_length"] = "longest"
    tokenizer: Literal["words", "bytes"] = "words"  # built-in tokenizer (ignored with pretrained)
    vocab_size: int = 8192  # buckets of the "words" tokenizer, specials included
    lowercase: bool = True  # "words" tokenizer only


class _TextBase(Processor):
    kind = "text"
    pad_token_id: int = PAD_ID
    vocab_size: int

    def __init__(self, config: TextProcessorConfig):
        if config.max_length < 2:
            raise DataError(f"text processor: max_length must be at least 2, got {config.max_length}")
        self.config = config
        self.max_length = config.max_length

    def check(self, raw: Any) -> None:
        if not isinstance(raw, str):
            raise DataError(f"text input must be a string, got {type(raw).__name__} {raw!r}")

    def _finish(self, ids: list[int]) -> dict[str, Tensor]:
        ids = ids[: self.max_length]
        mask = [1] * len(ids)
        if self.config.padding == "max_length":
            pad = self.max_length - len(ids)
            ids, mask = ids + [self.pad_token_id] * pad, mask + [0] * pad
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}

    def empty(self) -> dict[str, Tensor]:
        # One pad token with mask 0 (length 1 keeps shapes valid for every encoder).
        length = self.max_length if self.config.padding == "max_length" else 1
        return {
            "input_ids": torch.full((length,), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros(length, dtype=torch.long),
        }

    @property
    def pad_values(self) -> dict[str, float]:  # type: ignore[override]
        return {"input_ids": self.pad_token_id, "attention_mask": 0}


class BuiltinTextProcessor(_TextBase):
    """Offline tokenizer (no files): hashed words or bytes. ``vocab_size`` and ``pad_token_id`` (0) exposed."""

    def __init__(self, config: TextProcessorConfig):
        super().__init__(config)
        if config.tokenizer == "bytes":
            self.vocab_size = NUM_SPECIAL + 256
        else:
            if config.vocab_size <= NUM_SPECIAL:
                raise DataError(f"text processor: vocab_size must exceed {NUM_SPECIAL}, got {config.vocab_size}")
            self.vocab_size = config.vocab_size

    def tokenize(self, text: str) -> list[int]:
        """Token ids without specials."""
        if self.config.tokenizer == "bytes":
            return [NUM_SPECIAL + b for b in text.encode("utf-8")]
        if self.config.lowercase:
            text = text.lower()
        buckets = self.vocab_size - NUM_SPECIAL
        return [NUM_SPECIAL + zlib.crc32(word.encode("utf-8")) % buckets for word in _WORD_RE.findall(text)]

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        self.check(raw)
        body = self.tokenize(raw)[: self.max_length - 2]
        return self._finish([CLS_ID, *body, SEP_ID])


class HFTextProcessor(_TextBase):
    """``AutoTokenizer.from_pretrained(pretrained)`` with truncation to ``max_length``."""

    def __init__(self, pretrained: str, config: TextProcessorConfig):
        super().__init__(config)
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        except Exception as err:
            raise DataError(f"cannot load the tokenizer of {pretrained!r}: {err}") from err
        pad = self.tokenizer.pad_token_id
        if pad is None:  # GPT-style tokenizers have no pad token; the mask makes the choice irrelevant
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_token_id = int(pad)
        self.vocab_size = len(self.tokenizer)

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        self.check(raw)
        encoded = self.tokenizer(raw, truncation=True, max_length=self.max_length)
        return self._finish(list(encoded["input_ids"]))

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = super().save_pretrained(directory)
        self.tokenizer.save_pretrained(str(directory))
        return directory


def build_text_processor(cfg: ModalityConfig, prefix: str) -> Processor:
    options = parse_options(TextProcessorConfig, cfg.processor, prefix)
    if cfg.pretrained:
        return HFTextProcessor(cfg.pretrained, options)
    return BuiltinTextProcessor(options)
