"""Conditioned masked language modelling (ALBEF/BLIP MLM): predict masked text tokens from the text fused
with the other modality's tokens. BERT masking: 15% of the real, non-special tokens are selected; of those
80% become the mask token, 10% a random token, 10% stay unchanged; the loss is taken on selected positions only.

Needs the text vocabulary size and mask token id: from the text encoder / its tokenizer (HF tokenizers:
``tokenizer.mask_token_id``), or set explicitly in the objective's options.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import OBJECTIVES
from ..types import Batch
from .base import Objective, ObjectiveSetup, PairInputs, zero_loss
from .cross_attention import CrossModalEncoder, pair_key

IGNORE_INDEX = -100
# Keys under which prepare() stores a text modality's drawn masking in Batch.inputs[text]; encoders never see
# them (AlignmentModel.encode_modality drops them).
MASKED_IDS_KEY, MLM_LABELS_KEY = "mlm_input_ids", "mlm_labels"
PREPARED_KEYS = (MASKED_IDS_KEY, MLM_LABELS_KEY)


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: tuple[int, ...] | list[int] = (),
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT 80/10/10 masking. input_ids [B, L] → (masked_ids [B, L], labels [B, L] with -100 where unselected).

    Only positions with attention_mask == 1 and an id outside ``special_token_ids`` can be selected.
    """
    device = input_ids.device

    def draw(p: float) -> Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device) < p

    candidates = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    specials = torch.tensor(sorted({*special_token_ids, mask_token_id}), dtype=input_ids.dtype, device=device)
    candidates = candidates & ~torch.isin(input_ids, specials)
    selected = draw(probability) & candidates
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    to_mask = selected & draw(0.8)
    to_random = selected & ~to_mask & draw(0.5)  # half of the remaining 20%
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device, dtype=input_ids.dtype)
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


@OBJECTIVES.register("mlm")
class MaskedLanguageObjective(Objective):
    """Masked-token prediction from text tokens cross-attending to the paired modality's tokens."""

    def __init__(self, setup: ObjectiveSetup, width: int = 128, depth: int = 1, heads: int = 4,
                 dropout: float = 0.0, probability: float = 0.15, vocab_size: int | None = None,
                 mask_token_id: int | None = None, special_token_ids: list[int] | None = None):
        super().__init__(setup)
        if not 0.0 < probability < 1.0:
            raise ValueError(f"mlm: probability must be in (0, 1), got {probability}")
        self.probability = probability
        self.fusers = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.text_info: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        for a, b in setup.pairs:
            text, other = self._roles(a, b)
            if text is None:
                continue
            spec = setup.modalities[text]
            vocab = vocab_size or spec.vocab_size
            mask_id = spec.mask_token_id if mask_token_id is None else mask_token_id
            if vocab is None or mask_id is None:
                raise ValueError(
                    f"mlm: modality {text!r} needs a vocabulary size and a mask token id; the encoder / tokenizer "
                    f"did not provide them (vocab_size={vocab}, mask_token_id={mask_id}). Set "
                    "objectives[].options.vocab_size and .mask_token_id"
                )
            if not 0 <= mask_id < vocab:
                raise ValueError(f"mlm: mask_token_id {mask_id} is outside the vocabulary [0, {vocab})")
            specials = tuple(special_token_ids) if special_token_ids is not None else spec.special_token_ids
            if spec.pad_token_id is not None:
                specials = (*specials, spec.pad_token_id)
            self.text_info[text] = (vocab, mask_id, specials)
            self.fusers[pair_key(text, other)] = CrossModalEncoder(
                spec.token_dim, setup.modalities[other].token_dim, width, depth, heads, dropout
            )
            if text not in self.heads:
                self.heads[text] = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width),
                                                 nn.Linear(width, vocab))
        if not self.text_info:
            raise ValueError(f"mlm: none of the pairs {setup.pairs} has exactly one text modality")
        self.generator: torch.Generator | None = None

    def raw_input_modalities(self) -> set[str]:
        """The text modalities: their masked ids are re-encoded, so their outputs cannot be cached."""
        return set(self.text_info)

    def _roles(self, a: str, b: str) -> tuple[str | None, str | None]:
        kind_a, kind_b = self.setup.modalities[a].kind, self.setup.modalities[b].kind
        if kind_a == "text" and kind_b != "text":
            return a, b
        if kind_b == "text" and kind_a != "text":
            return b, a
        return None, None

    def _mask(self, text: str, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(masked_ids, labels) [B, L] for one text modality's inputs: prepared ones, else drawn now."""
        if MLM_LABELS_KEY in inputs:
            return inputs[MASKED_IDS_KEY], inputs[MLM_LABELS_KEY]
        if "input_ids" not in inputs:
            raise ValueError(f"mlm: modality {text!r} inputs have no 'input_ids' (got {sorted(inputs)})")
        vocab, mask_id, specials = self.text_info[text]
        return mask_tokens(inputs["input_ids"], inputs.get("attention_mask"), mask_token_id=mask_id,
                           vocab_size=vocab, special_token_ids=specials, probability=self.probability,
                           generator=self.generator)

    def prepare(self, batch: Batch) -> Batch:
        """Draw the masks of every text modality now, so the step's masked-token count is known before it runs.

        Returns a new Batch whose ``inputs[text]`` also hold ``mlm_input_ids`` / ``mlm_labels`` [B, L]
        (already-prepared modalities are kept as they are).
        """
        inputs = dict(batch.inputs)
        for text in self.text_info:
            if text in inputs and MLM_LABELS_KEY not in inputs[text]:
                masked_ids, labels = self._mask(text, inputs[text])
                inputs[text] = {**inputs[text], MASKED_IDS_KEY: masked_ids, MLM_LABELS_KEY: labels}
        return dataclasses.replace(batch, inputs=inputs)

    def count(self, pair: PairInputs) -> int | None:
        """Masked (selected) tokens of the pair's rows: the MLM loss is a mean over tokens, not samples."""
        text, _ = self._roles(pair.a, pair.b)
        if text is None:
            return None
        inputs = pair.inputs_a if text == pair.a else pair.inputs_b
        if MLM_LABELS_KEY not in inputs:
            raise ValueError("mlm: count() needs the masks drawn beforehand by prepare(batch)")
        return int((inputs[MLM_LABELS_KEY] != IGNORE_INDEX).sum())

    def forward(self, pair: PairInputs) -> Tensor | None:
        text, other = self._roles(pair.a, pair.b)
        if text is None:
            return None
        if pair.encode is None:
            raise ValueError("mlm needs PairInputs.encode to re-encode the masked text")
        inputs = pair.inputs_a if text == pair.a else pair.inputs_b
        other_out = pair.out_b if text == pair.a else pair.out_a
        masked_ids, labels = self._mask(text, inputs)
        selected = labels != IGNORE_INDEX
        if not selected.any():
            return zero_loss(other_out.tokens if other_out is not None else None, pair.emb_a)
        present = torch.ones(masked_ids.shape[0], dtype=torch.bool, device=masked_ids.device)
        text_out = pair.encode(text, {**inputs, "input_ids": masked_ids}, present)
        if text_out.tokens.shape[1] != masked_ids.shape[1]:
            raise ValueError(
                f"mlm: the {text!r} encoder returns {text_out.tokens.shape[1]} tokens for {masked_ids.shape[1]} "
                "input ids; MLM needs one output token per input id"
            )
        fused = self.fusers[pair_key(text, other)](text_out.tokens, text_out.mask, other_out.tokens, other_out.mask)
        logits = self.heads[text](fused[selected])  # only the selected positions: [n_selected, vocab]
        return F.cross_entropy(logits, labels[selected])
