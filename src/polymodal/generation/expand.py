"""Placeholder expansion: the decoder's input embeddings with each ``<image>`` / ``<audio>`` token replaced by the
real tokens of its attachment's connector output (the LLaVA recipe: Liu et al., 2023, arXiv:2304.08485, §4.1;
Hugging Face's ``LlavaForConditionalGeneration`` does the same with a fixed count per image).

Shapes: B samples, L text tokens (placeholders one token each), D LM width, K_m attachments of modality m in the
batch, M_m connector tokens per attachment; L' the expanded length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..connectors import ConnectorOutput
from ..data.errors import DataError
from .chat import IGNORE_INDEX


@dataclass
class Expanded:
    """inputs_embeds [B, L', D]; attention_mask [B, L'] long; labels [B, L'] (-100 on attachment tokens, prompt
    and padding) or None; position_ids [B, L'] long, counting real tokens only (so left padding does not shift
    positions); input_ids [B, L'] with the placeholder id at each attachment token and ``pad_id`` at padding
    (what ``generate`` needs for the repetition penalty over the prompt, as Hugging Face's LLaVA does)."""

    inputs_embeds: Tensor
    attention_mask: Tensor
    labels: Tensor | None
    position_ids: Tensor
    input_ids: Tensor


def expand_placeholders(input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None, text_embeds: Tensor,
                        features: dict[int, ConnectorOutput], padding_side: str = "right",
                        ids: list[str] | None = None, pad_id: int = 0) -> Expanded:
    """Replace placeholder tokens by attachment tokens and re-pad.

    input_ids / attention_mask / labels: [B, L]; text_embeds: [B, L, D] (the embeddings of input_ids);
    features: placeholder token id → ConnectorOutput(tokens [K, M, D], mask [K, M]) for the K attachments of
    that placeholder in the batch, in sample order then text order. An attachment contributes only its real
    (mask True) tokens. ``padding_side``: "right" for training, "left" for generation.
    Raises DataError when a sample has more placeholders than attachments remain, or attachments are left over.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch, _, width = text_embeds.shape
    cursor = dict.fromkeys(features, 0)
    placeholder_ids = torch.tensor(sorted(features), dtype=input_ids.dtype, device=input_ids.device)
    sequences, label_rows, id_rows = [], [], []
    for b in range(batch):
        real = attention_mask[b].bool()
        row_ids, row_embeds = input_ids[b][real], text_embeds[b][real]
        row_labels = labels[b][real] if labels is not None else None
        is_placeholder = torch.isin(row_ids, placeholder_ids)
        pieces, piece_labels, piece_ids, start = [], [], [], 0
        for pos in is_placeholder.nonzero().flatten().tolist():
            token = int(row_ids[pos])
            k = cursor[token]
            found = features[token]
            if k >= found.tokens.shape[0]:
                who = f"sample {ids[b]}" if ids else f"sample {b}"
                raise DataError(f"{who}: more placeholders (token id {token}) than the {found.tokens.shape[0]} "
                                f"attachment(s) given for the batch; each placeholder needs one attachment")
            cursor[token] = k + 1
            attachment = found.tokens[k][found.mask[k]].to(row_embeds.dtype)
            pieces += [row_embeds[start:pos], attachment]
            piece_ids += [row_ids[start:pos], row_ids.new_full((attachment.shape[0],), token)]
            if row_labels is not None:
                piece_labels += [row_labels[start:pos], row_labels.new_full((attachment.shape[0],), IGNORE_INDEX)]
            start = pos + 1
        pieces.append(row_embeds[start:])
        sequences.append(torch.cat(pieces))
        piece_ids.append(row_ids[start:])
        id_rows.append(torch.cat(piece_ids))
        if row_labels is not None:
            piece_labels.append(row_labels[start:])
            label_rows.append(torch.cat(piece_labels))
    leftover = {token: found.tokens.shape[0] - cursor[token] for token, found in features.items()
                if cursor[token] != found.tokens.shape[0]}
    if leftover:
        raise DataError(f"{sum(leftover.values())} attachment(s) have no placeholder in the batch's text "
                        f"(placeholder token ids {sorted(leftover)}); put one placeholder per attachment in the prompt")
    length = max(seq.shape[0] for seq in sequences)
    embeds = text_embeds.new_zeros(batch, length, width)
    mask = attention_mask.new_zeros(batch, length)
    out_ids = input_ids.new_full((batch, length), pad_id)
    out_labels = None if labels is None else labels.new_full((batch, length), IGNORE_INDEX)
    for b, seq in enumerate(sequences):
        n = seq.shape[0]
        window = slice(length - n, length) if padding_side == "left" else slice(0, n)
        embeds[b, window] = seq  # writes into a fresh tensor keep the graph to text and connector embeddings
        mask[b, window] = 1
        out_ids[b, window] = id_rows[b]
        if out_labels is not None:
            out_labels[b, window] = label_rows[b]
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    return Expanded(inputs_embeds=embeds, attention_mask=mask, labels=out_labels, position_ids=positions,
                    input_ids=out_ids)


def token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ of next-token cross-entropies over labelled positions, number of those positions).

    logits [B, L, V], labels [B, L] with -100 = no loss; position t's logits predict the label at t + 1 (the
    standard causal-LM shift). The sum is in float32 whatever the logits' dtype. The count is a 0-d long tensor.
    """
    targets = labels[:, 1:]
    loss_sum = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def count_answer_tokens(labels: Tensor, attention_mask: Tensor) -> int:
    """How many tokens :func:`token_loss` will count for a collated batch, before expansion (which only adds
    -100 positions): labelled real tokens except each sample's first, which nothing predicts."""
    real = attention_mask.bool()
    first = real & (real.long().cumsum(-1) == 1)
    return int(((labels != IGNORE_INDEX) & real & ~first).sum())
