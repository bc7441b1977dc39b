"""Samples → GenerationBatch: token ids, answer-only labels and the attachments of every sample, in order.

A sample is a dict: ``messages`` or ``prompt`` (+ ``answer``) (see :mod:`.chat`), optional ``attachments``
``{modality: [inputs, ...]}`` where each ``inputs`` is the dict of tensors one attachment's encoder takes
(a processor's output without the batch dimension, e.g. ``{"pixel_values": [C, H, W]}``), and optional ``id``.
The k-th attachment of a modality fills the k-th placeholder of that modality in the sample's text, so a sample
holds as many ``<image>`` placeholders as image attachments (zero, one or several); a mismatch is a DataError
naming the sample.

Attachments of a modality are concatenated over the batch in sample order: ``attachments[m][key]`` is
[K_m, ...] with K_m the batch's total, padded with zeros to the largest shape when sizes differ (so a mask key,
e.g. ``feature_mask`` [K, T], pads with False).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..data.errors import DataError
from ..data.processors import pad_stack
from .chat import IGNORE_INDEX, encode_messages, sample_messages


@dataclass
class GenerationBatch:
    """input_ids [B, L] long (placeholders still one token each), attention_mask [B, L] long (1 = real token),
    labels [B, L] long (-100 = no loss) or None for generation prompts, attachments {modality: {key: [K_m, ...]}},
    ids: one per sample."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None = None
    attachments: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> GenerationBatch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return GenerationBatch(
            input_ids=move(self.input_ids), attention_mask=move(self.attention_mask),
            labels=None if self.labels is None else move(self.labels),
            attachments={m: {k: move(v) for k, v in d.items()} for m, d in self.attachments.items()},
            ids=list(self.ids),
        )


class GenerationCollator:
    """Callable collate_fn: ``collator(samples) -> GenerationBatch``.

    tokenizer:         a Hugging Face tokenizer holding each placeholder as one token (``prepare_tokenizer``)
    placeholders:      modality → placeholder text, e.g. {"image": "<image>", "audio": "<audio>"}
    for_generation:    build prompts ending with the generation prompt, no labels; a conversation's final
                       assistant turn (or a sample's ``answer``) is dropped: it is the reference, not the prompt
    use_chat_template: format with ``tokenizer.apply_chat_template`` (else ``bos + prompt + answer + eos``)
    """

    def __init__(self, tokenizer: Any, placeholders: dict[str, str], *, for_generation: bool = False,
                 use_chat_template: bool = True):
        self.tokenizer = tokenizer
        self.for_generation = for_generation
        self.use_chat_template = use_chat_template
        self.placeholder_ids: dict[str, int] = {}
        for modality, text in placeholders.items():
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise DataError(f"placeholder {text!r} of modality {modality!r} is {len(ids)} tokens for this "
                                f"tokenizer, not one; add it first (decoders.prepare_tokenizer)")
            self.placeholder_ids[modality] = int(ids[0])
        self.placeholders = dict(placeholders)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

    def encode(self, sample: dict[str, Any], index: int = 0) -> tuple[list[int], list[int], dict[str, list]]:
        """(input_ids, labels, attachments) of one sample, with placeholder counts checked."""
        where = f"sample {sample.get('id', index)!s}"
        if not isinstance(sample, dict):
            raise DataError(f"{where}: expected a dict with 'messages' or 'prompt', got {type(sample).__name__}")
        messages = sample_messages(sample, where)
        if self.for_generation and messages[-1]["role"] == "assistant":
            # a training row used for generation (evaluation): its last answer is the reference, not the prompt
            messages = messages[:-1]
            if not messages:
                raise DataError(f"{where}: the conversation is a single assistant message; nothing to answer")
        encoded = encode_messages(self.tokenizer, messages, for_generation=self.for_generation,
                                  use_chat_template=self.use_chat_template, where=where)
        attachments = sample.get("attachments") or {}
        if not isinstance(attachments, dict):
            raise DataError(f"{where}: 'attachments' must map a modality name to a list of inputs")
        unknown = sorted(set(attachments) - set(self.placeholder_ids))
        if unknown:
            raise DataError(f"{where}: attachments {unknown} have no placeholder in this model; known modalities: "
                            f"{sorted(self.placeholder_ids)}")
        for modality, token_id in self.placeholder_ids.items():
            items = attachments.get(modality) or []
            if not isinstance(items, (list, tuple)):
                items = [items]
            found = encoded.input_ids.count(token_id)
            if found != len(items):
                raise DataError(
                    f"{where}: the text holds {found} {self.placeholders[modality]} placeholder(s) but the sample has "
                    f"{len(items)} {modality} attachment(s); put one {self.placeholders[modality]} in the prompt per "
                    f"attachment, where it should be read"
                )
            for k, item in enumerate(items):
                if not isinstance(item, dict) or not all(isinstance(v, Tensor) for v in item.values()):
                    raise DataError(f"{where}: {modality} attachment {k} must be a dict of tensors (the encoder's "
                                    f"inputs, e.g. {{'pixel_values': tensor}}), got {type(item).__name__}")
        return encoded.input_ids, encoded.labels, {m: list(v) if isinstance(v, (list, tuple)) else [v]
                                                   for m, v in attachments.items()}

    def __call__(self, samples: Sequence[dict[str, Any]]) -> GenerationBatch:
        if not samples:
            raise DataError("GenerationCollator: got an empty list of samples")
        rows = [self.encode(sample, i) for i, sample in enumerate(samples)]
        length = max(len(ids) for ids, _, _ in rows)
        batch = len(rows)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        gathered: dict[str, list[dict[str, Tensor]]] = {}
        for b, (ids, labs, attachments) in enumerate(rows):
            # right padding; the model re-pads after expanding placeholders (left for generation)
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[b, : len(labs)] = torch.tensor(labs, dtype=torch.long)
            attention_mask[b, : len(ids)] = 1
            for modality, items in attachments.items():
                gathered.setdefault(modality, []).extend(items)
        return GenerationBatch(
            input_ids=input_ids, attention_mask=attention_mask,
            labels=None if self.for_generation else labels,
            attachments={m: stack_attachments(items, m) for m, items in gathered.items() if items},
            ids=[str(sample.get("id", i)) for i, sample in enumerate(samples)],
        )


def stack_attachments(items: list[dict[str, Tensor]], modality: str) -> dict[str, Tensor]:
    """[{key: tensor}] → {key: [K, ...]}; every attachment must have the same keys."""
    keys = set(items[0])
    for k, item in enumerate(items):
        if set(item) != keys:
            raise DataError(f"{modality} attachment {k} has inputs {sorted(item)} but attachment 0 has {sorted(keys)}")
    try:
        return {key: pad_stack([item[key] for item in items]) for key in items[0]}
    except ValueError as err:
        raise DataError(f"{modality} attachments cannot be batched: {err}") from err
