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
    # Vectorised over the batch: every output position is gathered from one flat source (text embeddings, then
    # each modality's connector tokens, then a zero row for padding). A per-sample loop of slices and
    # concatenations costs O(B) kernels forward and, worse, O(B²·L·D) backward (each row's select materialises
    # a gradient the size of the whole batch); one gather's backward is one index_add.
    batch, length_in, width = text_embeds.shape
    device = input_ids.device
    real = attention_mask.bool()
    tokens = sorted(features)
    occurrences = {token: (input_ids == token) & real for token in tokens}  # [B, L] each
    _check_counts(occurrences, features, ids, length_in)
    sizes = real.long()  # positions each input token occupies after expansion: 1, or its attachment's real tokens
    for token in tokens:
        sizes[occurrences[token]] = features[token].mask.to(device=device, dtype=torch.bool).sum(1).to(sizes.dtype)
    totals = sizes.sum(1)  # [B]
    length = int(totals.max()) if batch else 0
    starts = sizes.cumsum(1) - sizes  # [B, L] first output position of each input token
    if padding_side == "left":
        starts = starts + (length - totals).unsqueeze(1)
    rows = torch.arange(batch, device=device).unsqueeze(1) * length  # [B, 1] flat offset of each output row
    text = real.clone()
    for token in tokens:
        text &= ~occurrences[token]
    dest = [(rows + starts)[text]]
    source = [torch.arange(batch * length_in, device=device).view(batch, length_in)[text]]
    offset, source_embeds = batch * length_in, [text_embeds.reshape(-1, width)]
    source_ids, source_labels = [input_ids.reshape(-1)], [] if labels is None else [labels.reshape(-1)]
    for token in tokens:
        found = features[token]
        count, per = found.tokens.shape[:2]
        keep = found.mask.to(device=device, dtype=torch.bool)  # [K, M]
        host_b, host_i = occurrences[token].nonzero(as_tuple=True)  # [K]: attachment k fills placeholder k
        first = (rows[:, 0][host_b] + starts[host_b, host_i]).unsqueeze(1)  # [K, 1]
        dest.append((first + keep.long().cumsum(1) - 1)[keep])
        source.append((offset + torch.arange(count * per, device=device).view(count, per))[keep])
        source_embeds.append(found.tokens.reshape(-1, width).to(text_embeds.dtype))
        source_ids.append(input_ids.new_full((count * per,), token))
        if labels is not None:
            source_labels.append(labels.new_full((count * per,), IGNORE_INDEX))
        offset += count * per
    # padding gathers the extra last row: zero embedding, pad id, no label
    index = torch.full((batch * length,), offset, dtype=torch.long, device=device)
    index[torch.cat(dest)] = torch.cat(source)
    padded = index == offset
    embeds = torch.cat([*source_embeds, text_embeds.new_zeros(1, width)]).index_select(0, index)
    out_ids = torch.cat([*source_ids, input_ids.new_full((1,), pad_id)])[index]
    out_labels = None
    if labels is not None:
        out_labels = torch.cat([*source_labels, labels.new_full((1,), IGNORE_INDEX)])[index].view(batch, length)
    mask = (~padded).to(attention_mask.dtype).view(batch, length)
    embeds, out_ids = embeds.view(batch, length, width), out_ids.view(batch, length)
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    return Expanded(inputs_embeds=embeds, attention_mask=mask, labels=out_labels, position_ids=positions,
                    input_ids=out_ids)


def _check_counts(occurrences: dict[int, Tensor], features: dict[int, ConnectorOutput], ids: list[str] | None,
                  length: int) -> None:
    """DataError when a placeholder token occurs more or fewer times (real positions) than it has attachments.

    Too many: the sample of the first placeholder, in batch then text order, that finds no attachment left.
    """
    overflow = []
    for token, occurs in occurrences.items():
        given = features[token].tokens.shape[0]
        if int(occurs.sum()) > given:
            where = int(occurs.flatten().nonzero()[given])  # the first placeholder without an attachment
            overflow.append((where, token, given))
    if overflow:
        where, token, given = min(overflow)
        b = where // length
        who = f"sample {ids[b]}" if ids else f"sample {b}"
        raise DataError(f"{who}: more placeholders (token id {token}) than the {given} attachment(s) given for the "
                        f"batch; each placeholder needs one attachment")
    leftover = {token: features[token].tokens.shape[0] - int(occurs.sum()) for token, occurs in occurrences.items()}
    leftover = {token: n for token, n in leftover.items() if n}
    if leftover:
        raise DataError(f"{sum(leftover.values())} attachment(s) have no placeholder in the batch's text "
                        f"(placeholder token ids {sorted(leftover)}); put one placeholder per attachment in the prompt")


def token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ of next-token cross-entropies over labelled positions, number of those positions).

    logits [B, L, V], labels [B, L] with -100 = no loss; position t's logits predict the label at t + 1 (the
    standard causal-LM shift). The sum is in float32 whatever the logits' dtype. The count is a 0-d long tensor.
    """
    # shift the labels, not the logits (as transformers' ForCausalLMLoss): logits[:, :-1] is not contiguous, so
    # flattening it would copy all B·L·V logits forward and scatter their gradient back; the last position of
    # each row gets no label instead. Gradients are unchanged; the sum's rounding may differ in its last bit.
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    loss_sum = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def count_answer_tokens(labels: Tensor, attention_mask: Tensor) -> int:
    """How many tokens :func:`token_loss` will count for a collated batch, before expansion (which only adds
    -100 positions): labelled real tokens except each sample's first, which nothing predicts."""
    real = attention_mask.bool()
    first = real & (real.long().cumsum(-1) == 1)
    return int(((labels != IGNORE_INDEX) & real & ~first).sum())
