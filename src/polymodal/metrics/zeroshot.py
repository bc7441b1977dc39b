"""Zero-shot classification with an aligned model: class names → prompt-ensembled text embeddings → classifier.

    weights = build_zeroshot_classifier(model, ["zero", "one", ...], modality="image")   # [C, E]
    logits = zeroshot_predict(model, batch, weights, modality="image")                   # [B, C]
    zeroshot_metrics(logits, batch.labels)   # {"top1", "top5", "mean_per_class_recall"}

Prompt ensembling (CLIP): each class embedding is the mean of its normalised template embeddings, renormalised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import Batch

DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "image": ["a photo of a {}."],
    "audio": ["a recording of someone saying {}."],
    "text": ["{}"],
}


def default_templates(kind: str) -> list[str]:
    if kind not in DEFAULT_TEMPLATES:
        raise ValueError(f"no default templates for modality kind {kind!r}; pass templates=[...]")
    return list(DEFAULT_TEMPLATES[kind])


def _text_inputs(processor: Any, texts: list[str]) -> dict[str, Tensor]:
    """Batch inputs for a list of strings: per-sample processor + its collate, or a batch callable."""
    if hasattr(processor, "collate"):
        return processor.collate([processor(text) for text in texts])
    inputs = processor(texts)
    if not isinstance(inputs, dict):
        raise TypeError(f"the text processor must return a dict of tensors, got {type(inputs).__name__}")
    return dict(inputs)


@torch.no_grad()
def encode_texts(model: Any, texts: Sequence[str], text_modality: str = "text", processor: Any = None,
                 batch_size: int = 256) -> Tensor:
    """Strings → normalised embeddings [n, E] through the model's text tower."""
    processor = processor if processor is not None else model.processors[text_modality]
    device = model.logit_scale.device
    chunks = []
    for start in range(0, len(texts), batch_size):
        inputs = _text_inputs(processor, list(texts[start : start + batch_size]))
        inputs = {k: v.to(device) for k, v in inputs.items()}
        present = torch.ones(next(iter(inputs.values())).shape[0], dtype=torch.bool, device=device)
        chunks.append(model.embed(text_modality, model.encode_modality(text_modality, inputs, present)))
    return torch.cat(chunks)


def build_zeroshot_classifier(
    model: Any,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    text_modality: str = "text",
    processor: Any = None,
    modality: str | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Class names × templates → classifier weights [C, E] (unit-norm rows).

    ``templates``: strings with one "{}" for the class name; default: the templates of ``modality``'s kind
    ("a photo of a {}." for images, "a recording of someone saying {}." for audio). ``modality`` defaults to
    the model's first non-text modality. ``processor`` turns strings into the text tower's inputs (default:
    the model's own processor for ``text_modality``).
    """
    if not class_names:
        raise ValueError("class_names is empty")
    if templates is None:
        if modality is None:
            modality = next((m for m, c in model.config.modalities.items() if m != text_modality and c.kind != "text"),
                            None)
        kind = model.config.modalities[modality].kind if modality is not None else "text"
        templates = default_templates(kind)
    if isinstance(templates, str):
        templates = [templates]
    for template in templates:
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no '{{}}' placeholder for the class name")
    prompts = [template.format(name) for name in class_names for template in templates]
    was_training = model.training
    model.eval()
    try:
        emb = encode_texts(model, prompts, text_modality, processor, batch_size)
    finally:
        model.train(was_training)
    emb = emb.view(len(class_names), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def zeroshot_logits(embeddings: Tensor, classifier: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """embeddings [B, E] (normalised) · classifier [C, E]ᵀ → logits [B, C]."""
    return scale * embeddings @ classifier.T


@torch.no_grad()
def zeroshot_predict(model: Any, batch: Batch, classifier: Tensor, modality: str) -> Tensor:
    """Logits [B, C] (temperature-scaled cosine similarities) for one modality of a batch."""
    return zeroshot_logits(model.encode(batch, modality), classifier.to(model.logit_scale.device), model.scale())


def zeroshot_metrics(logits: Tensor, labels: Tensor, num_classes: int | None = None) -> dict[str, float]:
    """top1, top5 (top-min(5, C)) accuracy and mean per-class recall (balanced accuracy; classes absent from
    ``labels`` are left out of the mean)."""
    labels = labels.view(-1).long().to(logits.device)
    num_classes = num_classes or int(logits.shape[1])
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = top == labels.unsqueeze(1)
    pred = top[:, 0]
    per_class = []
    for c in range(num_classes):
        members = labels == c
        if members.any():
            per_class.append(float((pred[members] == c).double().mean()))
    return {
        "top1": float(hits[:, 0].double().mean()),
        "top5": float(hits.any(dim=1).double().mean()),
        "mean_per_class_recall": sum(per_class) / len(per_class) if per_class else float("nan"),
    }


def zeroshot_evaluate(model: Any, batches: Iterable[Batch], classifier: Tensor, modality: str,
                      on_batch: Callable[[Tensor], None] | None = None) -> dict[str, float]:
    """Run ``zeroshot_predict`` over labelled batches (samples lacking ``modality`` are skipped) → metrics."""
    all_logits, all_labels = [], []
    for batch in batches:
        if batch.labels is None:
            raise ValueError("zero-shot evaluation needs labelled batches (batch.labels is None)")
        logits = zeroshot_predict(model, batch.to(model.logit_scale.device), classifier, modality)
        keep = batch.present[modality].to(logits.device)
        all_logits.append(logits[keep].cpu())
        all_labels.append(batch.labels.to(logits.device)[keep].cpu())
        if on_batch is not None:
            on_batch(logits)
    if not all_logits:
        raise ValueError("zero-shot evaluation got no batches")
    return zeroshot_metrics(torch.cat(all_logits), torch.cat(all_labels), int(classifier.shape[0]))
