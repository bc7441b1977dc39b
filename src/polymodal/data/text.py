"""Text processors: string → ``input_ids`` [L] long + ``attention_mask`` [L] long.

With ``pretrained`` set, the checkpoint's tokenizer (``AutoTokenizer``). Without it, a built-in tokenizer that
needs no files, so the from-scratch text encoder works offline:

- ``tokenizer="words"`` (default): lower-cased words and punctuation, each hashed (crc32, stable across
  processes and machines) into ``vocab_size - 4`` buckets;
- ``tokenizer="bytes"``: UTF-8 bytes (vocab 260), lossless for any language.

Special ids of the built-in tokenizers: pad 0, cls 1 (prepended), sep 2 (appended), unk 3.
Sequences are truncated to ``max_length``; ``padding="longest"`` pads in collate to the longest in the batch,
``"max_length"`` pads every sample to ``max_length``.

``max_length`` never exceeds what the modality's encoder takes (``polymodal.encoders.capacity``): the tokenizer's
``model_max_length``, the checkpoint's ``max_position_embeddings``, a CLIP ``context_length`` or the
``text_transformer``'s ``max_positions``. Unset, it is min(64, that limit); set above it, a ConfigError names
``model.modalities.<name>.processor.max_length``.

Loading a tokenizer never runs code from the checkpoint unless the modality's ``options.trust_remote_code`` is
true (passed to transformers explicitly either way).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..config import ModalityConfig, bounds
from .errors import DataError
from .processors import Processor, parse_options

PAD_ID, CLS_ID, SEP_ID, UNK_ID = 0, 1, 2, 3
DEFAULT_TEXT_LENGTH = 64  # = encoders.capacity.DEFAULT_TEXT_LENGTH (constructing a processor directly)
UNBOUNDED = 10**9  # tokenizers that declare no limit report int(1e30)
NUM_SPECIAL = 4
_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class TextProcessorConfig:
    # tokens, special tokens included; None = min(64, the encoder's limit). Never above that limit.
    max_length: int | None = field(default=None, metadata=bounds(ge=2))
    padding: Literal["longest", "max_length"] = "longest"
    tokenizer: Literal["words", "bytes"] = "words"  # built-in tokenizer (ignored with pretrained)
    vocab_size: int = 8192  # buckets of the "words" tokenizer, specials included
    lowercase: bool = True  # "words" tokenizer only


class _TextBase(Processor):
    kind = "text"
    pad_token_id: int = PAD_ID
    vocab_size: int

    def __init__(self, config: TextProcessorConfig, max_length: int | None = None):
        """``max_length``: the resolved length (``resolve_max_length``); default ``config.max_length`` or 64."""
        max_length = max_length or config.max_length or DEFAULT_TEXT_LENGTH
        if max_length < 2:
            raise DataError(f"text processor: max_length must be at least 2, got {max_length}")
        self.config = config
        self.max_length = max_length

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

    def __init__(self, config: TextProcessorConfig, max_length: int | None = None):
        super().__init__(config, max_length)
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
    """``AutoTokenizer.from_pretrained(pretrained)`` with truncation to ``max_length``.

    ``trust_remote_code`` is passed to transformers explicitly (False: a tokenizer that needs the checkpoint's
    own code is refused, never run). Raises DataError when the tokenizer cannot be loaded.
    """

    def __init__(self, pretrained: str, config: TextProcessorConfig, max_length: int | None = None,
                 trust_remote_code: bool = False, revision: str | None = None, tokenizer: Any = None):
        super().__init__(config, max_length)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(pretrained, trust_remote_code, revision)
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


def load_tokenizer(pretrained: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained`` with ``trust_remote_code`` explicit; DataError when it cannot load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:
        hint = ""
        if not trust_remote_code and "trust_remote_code" in str(err):
            hint = (" The tokenizer needs code shipped with the checkpoint, which polymodal runs only when the person "
                    "loading the model asks (trust_remote_code=True); a file inside a model directory cannot.")
        raise DataError(f"cannot load the tokenizer of {pretrained!r}: {err}{hint}") from err


def tokenizer_capacity(tokenizer: Any, pretrained: str) -> tuple[int | None, str]:
    """(``model_max_length``, source); None when the tokenizer declares no limit (transformers' 1e30)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit >= UNBOUNDED:
        return None, ""
    return limit, f"model_max_length of the tokenizer of {pretrained}"


def build_text_processor(cfg: ModalityConfig, prefix: str) -> Processor:
    """The text processor of ``cfg``; its length is capped by the encoder's capacity (ConfigError naming
    ``<prefix>.max_length`` when an explicit value exceeds it)."""
    # Lazy: the capacity rules live with the encoders, which know their limits (as encoders.factory imports the
    # data layer lazily for processor facts); nothing here builds an encoder or reads weights.
    from ..encoders.capacity import declared_text_capacity, resolve_max_length

    options = parse_options(TextProcessorConfig, cfg.processor, prefix)
    key = f"{prefix}.max_length"
    limits = [declared_text_capacity(cfg)]
    if cfg.pretrained:
        trust = cfg.options.get("trust_remote_code") is True
        revision = cfg.options.get("revision")
        tokenizer = load_tokenizer(cfg.pretrained, trust, revision)
        max_length = resolve_max_length(options.max_length, [tokenizer_capacity(tokenizer, cfg.pretrained), *limits], key)
        return HFTextProcessor(cfg.pretrained, options, max_length, tokenizer=tokenizer)
    return BuiltinTextProcessor(options, resolve_max_length(options.max_length, limits, key))
