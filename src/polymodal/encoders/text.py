"""From-scratch text encoder: a tiny transformer over token ids.

Inputs: ``input_ids`` [B, L] long and ``attention_mask`` [B, L] (1 = real token, 0 = padding; all 0 for an
absent sample). The built-in tokenizers (data/text.py) use pad id 0 and prepend a CLS token (id 1).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ..registry import ENCODERS
from .base import Encoder
from .layers import TransformerStack, init_weights

BYTE_VOCAB_SIZE = 260  # the built-in byte tokenizer: 4 specials + 256 bytes


@ENCODERS.register("text_transformer")
class TextTransformer(Encoder):
    """Token + learned position embeddings → masked pre-norm transformer. Tokens [B, L, dim].

    ``vocab_size`` must cover the tokenizer's ids; the factory fills it from the modality's text processor.
    ``max_positions`` (default 512) caps the sequence length: the text processor's default length is
    min(64, max_positions), and a larger explicit ``processor.max_length`` is a ConfigError at build time.
    Pooling: "mean" (masked mean, default) or "cls" (the first token, which the built-in tokenizers make CLS).
    """

    kind = "text"
    max_tokens_source = "encoder option max_positions of text_transformer"

    @classmethod
    def token_capacity(cls, options: dict) -> tuple[int, str]:
        """(positions, source) the encoder built with ``options`` takes, without building it (capacity.py)."""
        default = inspect.signature(cls.__init__).parameters["max_positions"].default
        return int(options.get("max_positions", default)), cls.max_tokens_source

    def __init__(
        self,
        vocab_size: int = BYTE_VOCAB_SIZE,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        max_positions: int = 512,
        dropout: float = 0.1,
        pooling: str = "mean",
        pad_token_id: int = 0,
    ):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"text_transformer: pooling must be 'cls' or 'mean', got {pooling!r}")
        self.vocab_size, self.max_positions, self.pooling = vocab_size, max_positions, pooling
        self.max_tokens = max_positions  # the processor never emits more (capacity.py)
        self.output_dim = dim
        self.token_embed = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.pos_embed = nn.Embedding(max_positions, dim)
        self.drop = nn.Dropout(dropout)
        self.transformer = TransformerStack(dim, depth, heads, mlp_ratio, dropout)
        self.apply(init_weights)
        with torch.no_grad():  # trunc-normal init overwrote the padding row; padding must embed to zero
            self.token_embed.weight[pad_token_id].zero_()

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if "input_ids" not in inputs:
            raise KeyError(f"text_transformer expects inputs['input_ids'] [B, L]; got keys {sorted(inputs)}")
        ids = inputs["input_ids"]
        if ids.dim() != 2:
            raise ValueError(f"text_transformer expects input_ids [B, L], got {list(ids.shape)}")
        length = ids.shape[1]
        if length > self.max_positions:
            raise ValueError(
                f"text_transformer: sequence length {length} exceeds max_positions {self.max_positions}; "
                f"lower the processor max_length or raise the encoder option max_positions"
            )
        if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
            raise ValueError(
                f"text_transformer: token ids span [{int(ids.min())}, {int(ids.max())}] but vocab_size is "
                f"{self.vocab_size}; set the encoder option vocab_size to the tokenizer's vocabulary size"
            )
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        positions = torch.arange(length, device=ids.device)
        x = self.drop(self.token_embed(ids) + self.pos_embed(positions)[None])
        return self.transformer(x, mask), mask

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return tokens[:, 0]
        return super().pool(tokens, mask)
