"""Integrated gradients per modality input, through Captum.

Integrated gradients (IG; Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", ICML):

    IG_i(x) = (x_i - x'_i) · ∫_0^1 ∂f(x' + α (x - x')) / ∂x_i dα

with f the model's logit of the target class and x' a baseline. Completeness: Σ_i IG_i = f(x) - f(x'), up to
the quadrature error Captum reports as the convergence delta δ = Σ_i IG_i - (f(x) - f(x')).

One modality is attributed at a time; the sample's other modalities stay as they are. Per kind:

- image (``pixel_values`` [1, C, H, W], normalised): baselines ``"black"`` (an all-zero image pushed through the
  processor's normalisation, (0 - mean) / std) or ``"mean"`` (pixel_values 0, i.e. the normalisation mean image);
  scores [C, H, W].
- audio log-mel (``features`` [1, n_mels, T]): baselines ``"zero"`` (an all-zero log-mel; with the default
  per-utterance normalisation it equals the log-mel of silence) or ``"silence"`` (the processor's features of a
  silent waveform of the same length); scores [n_mels, T]. Raw-waveform HF audio (``input_values`` [1, S]):
  baseline silence (zeros); scores [S].
- text (``input_ids`` [1, L]): layer integrated gradients on the token-embedding output (Captum's
  LayerIntegratedGradients; IG is undefined on discrete ids). Baseline ``"pad"``: every real token replaced by the
  pad token except the special tokens (CLS / SEP / BOS / EOS), as in Captum's BERT tutorial; padding positions and
  the attention mask are unchanged. Scores per token [L] = IG summed over the embedding width.

Captum is an optional extra (``pip install 'polymodal[explain]'``); without it these functions raise ExplainError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..types import Batch
from .errors import ExplainError

IMAGE_BASELINES = ("black", "mean")
AUDIO_BASELINES = ("zero", "silence")
TEXT_BASELINES = ("pad",)
DEFAULT_BASELINES = {"image": "black", "audio": "zero", "text": "pad"}


@dataclass
class Attribution:
    """IG scores of one modality input of one sample.

    scores: image [C, H, W], log-mel [n_mels, T], waveform [S], text [L] (per token). ``valid``: [T] real frames or
    [L] real tokens (None for images). ``f_input`` / ``f_baseline``: the target logit at the input / baseline;
    ``delta``: Σ scores − (f_input − f_baseline), Captum's convergence delta (0 for exact integration).
    """

    modality: str
    kind: str
    key: str
    scores: Tensor
    baseline: str
    target: int
    steps: int
    delta: float
    f_input: float
    f_baseline: float
    valid: Tensor | None = None
    tokens: list[str] = field(default_factory=list)

    @property
    def relative_delta(self) -> float:
        """|δ| / max(|f(x) − f(x')|, 1e-6): how far the integral is from completeness, as a share."""
        return abs(self.delta) / max(abs(self.f_input - self.f_baseline), 1e-6)

    def summary(self) -> dict[str, Any]:
        return {
            "modality": self.modality, "kind": self.kind, "input": self.key, "baseline": self.baseline,
            "target": self.target, "steps": self.steps, "sum": float(self.scores.sum()),
            "f_input": self.f_input, "f_baseline": self.f_baseline, "convergence_delta": self.delta,
            "relative_delta": self.relative_delta,
        }


def _captum():
    try:
        import captum.attr as attr
    except ImportError as err:  # optional extra
        raise ExplainError(
            "integrated gradients need Captum, which is not installed: pip install 'polymodal[explain]' "
            "(or pip install captum)"
        ) from err
    return attr


def _repeat(tensor: Tensor, count: int) -> Tensor:
    """[1, ...] → [count, ...] (Captum evaluates the path points as one batch)."""
    # a copy, not expand(): some encoders reshape their inputs with view(), which a stride-0 batch refuses
    return tensor.repeat(count // tensor.shape[0], *([1] * (tensor.dim() - 1)))


def target_forward(model: nn.Module, batch: Batch, modality: str, key: str, target: int):
    """f(x) = the target logit [K] of ``batch`` (one sample) with ``inputs[modality][key]`` replaced by x [K, ...]."""

    def forward(x: Tensor) -> Tensor:
        count = x.shape[0]
        inputs = {m: {k: _repeat(v, count) for k, v in tensors.items()} for m, tensors in batch.inputs.items()}
        inputs[modality] = dict(inputs[modality], **{key: x})
        present = {m: _repeat(p, count) for m, p in batch.present.items()}
        out = model(Batch(inputs=inputs, present=present))
        logits = out.logits if hasattr(out, "logits") else out
        return logits[:, target]

    return forward


def _check_sample(model: nn.Module, batch: Batch, modality: str) -> str:
    if len(batch) != 1:
        raise ExplainError(f"integrated gradients explain one sample at a time; the batch has {len(batch)}")
    if modality not in batch.inputs or not bool(batch.present[modality][0]):
        raise ExplainError(f"modality {modality!r} is absent from this sample: give it an input to attribute it")
    return model.config.modalities[modality].kind


def _image_baseline(processor: Any, pixels: Tensor, baseline: str) -> Tensor:
    if baseline == "mean":
        return torch.zeros_like(pixels)
    if baseline == "black":
        mean, std = getattr(processor, "mean", None), getattr(processor, "std", None)
        if mean is None or std is None:  # a processor without normalisation: black is 0
            return torch.zeros_like(pixels)
        black = (-mean.to(pixels) / std.to(pixels)).unsqueeze(0)
        return black.expand_as(pixels).clone()
    raise ExplainError(f"image baseline {baseline!r} is not one of {list(IMAGE_BASELINES)}")


def _audio_baseline(processor: Any, features: Tensor, baseline: str) -> Tensor:
    if baseline == "zero":
        return torch.zeros_like(features)
    if baseline == "silence":
        hop = processor.config.hop_length
        silent = torch.zeros(max(1, (features.shape[-1] - 1) * hop))
        mel = processor.features_from_wave(silent)["features"].to(features)
        out = torch.zeros_like(features)
        frames = min(mel.shape[-1], features.shape[-1])
        out[0, :, :frames] = mel[:, :frames]
        return out
    raise ExplainError(f"audio baseline {baseline!r} is not one of {list(AUDIO_BASELINES)}")


def integrated_gradients(model: nn.Module, batch: Batch, modality: str, target: int, baseline: str | None = None,
                         steps: int = 64, text: str | None = None, batch_size: int = 16) -> Attribution:
    """IG of the ``target`` logit w.r.t. one modality input of a one-sample ``batch`` (see the module docstring).

    ``steps``: Gauss-Legendre points of the path integral (Captum's default method); more steps, smaller delta.
    ``text``: the raw string of a text modality (only to show the built-in tokenizers' tokens as words).
    ``batch_size``: path points per forward pass (Captum's internal_batch_size; bounds memory for big encoders).
    ``model`` should be in eval mode (dropout would make the integrand random). Raises ExplainError for an unknown baseline, an absent modality or a batch of more than one sample.
    """
    kind = _check_sample(model, batch, modality)
    if kind == "text":
        return text_integrated_gradients(model, batch, modality, target, baseline, steps, text, batch_size)
    attr = _captum()
    tensors = batch.inputs[modality]
    processor = model.processors[modality]
    if "pixel_values" in tensors:
        key = "pixel_values"
        baseline = baseline or DEFAULT_BASELINES["image"]
        reference = _image_baseline(processor, tensors[key], baseline)
        valid = None
    elif "features" in tensors:
        key = "features"
        baseline = baseline or DEFAULT_BASELINES["audio"]
        reference = _audio_baseline(processor, tensors[key], baseline)
        valid = tensors.get("feature_mask")
    elif "input_values" in tensors:
        key, baseline = "input_values", "silence"
        reference = torch.zeros_like(tensors[key])
        valid = tensors.get("attention_mask")
    else:
        raise ExplainError(f"modality {modality!r}: no input tensor to attribute among {sorted(tensors)}")
    x = tensors[key].detach().float()
    forward = target_forward(model, batch, modality, key, target)
    ig = attr.IntegratedGradients(forward)
    scores, delta = ig.attribute(x, baselines=reference, n_steps=steps, internal_batch_size=batch_size,
                                 return_convergence_delta=True)
    with torch.no_grad():
        f_input, f_baseline = float(forward(x)[0]), float(forward(reference)[0])
    return Attribution(
        modality=modality, kind=kind, key=key, scores=scores[0].detach().cpu(), baseline=baseline, target=target,
        steps=steps, delta=float(delta.reshape(-1)[0]), f_input=f_input, f_baseline=f_baseline,
        valid=None if valid is None else valid[0].bool().cpu(),
    )


# ---------------------------------------------------------------------------------------------- text


def embedding_layer(encoder: nn.Module) -> nn.Module:
    """The token-embedding module of a text encoder: text_transformer's ``token_embed`` or an HF backbone's
    ``get_input_embeddings()``. Raises ExplainError when the encoder has none."""
    layer = getattr(encoder, "token_embed", None)
    if isinstance(layer, nn.Module):
        return layer
    backbone = getattr(encoder, "backbone", None)
    getter = getattr(backbone, "get_input_embeddings", None)
    if getter is not None and isinstance(getter(), nn.Module):
        return getter()
    raise ExplainError(f"{type(encoder).__name__}: no token-embedding layer found for text attributions")


def special_ids(processor: Any) -> set[int]:
    """Ids kept in the text baseline: the built-in CLS / SEP (1, 2) or an HF tokenizer's special ids (not pad)."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        from ..data.text import CLS_ID, SEP_ID

        return {CLS_ID, SEP_ID}
    return {int(i) for i in tokenizer.all_special_ids} - {int(processor.pad_token_id)}


def pad_baseline(ids: Tensor, mask: Tensor, processor: Any) -> Tensor:
    """ids [1, L] → the baseline ids: real non-special tokens replaced by the pad id; specials and padding kept."""
    keep = torch.zeros_like(ids, dtype=torch.bool)
    for special in special_ids(processor):
        keep |= ids == special
    replace = mask.bool() & ~keep
    return torch.where(replace, torch.full_like(ids, int(processor.pad_token_id)), ids)


_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def token_strings(processor: Any, ids: Tensor, text: str | None = None) -> list[str]:
    """Readable tokens for ids [L]: an HF tokenizer's own tokens; for the built-in (hashed) tokenizers the words
    or bytes of ``text`` re-split the same way, with [CLS] / [SEP] / [PAD] around them."""
    ids_list = [int(i) for i in ids]
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        return [str(t) for t in tokenizer.convert_ids_to_tokens(ids_list)]
    from ..data.text import CLS_ID, PAD_ID, SEP_ID

    config = processor.config
    if text is None:
        body: list[str] = []
    elif config.tokenizer == "bytes":
        body = [bytes([b]).decode("utf-8", "replace") for b in text.encode("utf-8")]
    else:
        body = _WORD_RE.findall(text.lower() if config.lowercase else text)
    names = {CLS_ID: "[CLS]", SEP_ID: "[SEP]", PAD_ID: "[PAD]"}
    out, words = [], iter(body)
    for token in ids_list:
        out.append(names[token] if token in names else next(words, f"#{token}"))
    return out


def text_integrated_gradients(model: nn.Module, batch: Batch, modality: str, target: int,
                              baseline: str | None = None, steps: int = 64, text: str | None = None,
                              batch_size: int = 16) -> Attribution:
    """Layer IG on the token embedding of a text modality → per-token scores [L] (module docstring)."""
    _check_sample(model, batch, modality)
    baseline = baseline or DEFAULT_BASELINES["text"]
    if baseline not in TEXT_BASELINES:
        raise ExplainError(f"text baseline {baseline!r} is not one of {list(TEXT_BASELINES)}")
    attr = _captum()
    tensors = batch.inputs[modality]
    if "input_ids" not in tensors:
        raise ExplainError(f"modality {modality!r}: text attributions need input_ids; got {sorted(tensors)}")
    processor = model.processors[modality]
    ids = tensors["input_ids"]
    mask = tensors.get("attention_mask", torch.ones_like(ids))
    reference = pad_baseline(ids, mask, processor)
    forward = target_forward(model, batch, modality, "input_ids", target)
    lig = attr.LayerIntegratedGradients(forward, embedding_layer(model.encoders[modality]))
    scores, delta = lig.attribute(ids, baselines=reference, n_steps=steps, internal_batch_size=batch_size,
                                  return_convergence_delta=True)
    with torch.no_grad():
        f_input, f_baseline = float(forward(ids)[0]), float(forward(reference)[0])
    per_token = scores[0].detach().sum(-1).cpu()  # [L, D] → [L]
    return Attribution(
        modality=modality, kind="text", key="input_ids", scores=per_token, baseline=baseline, target=target,
        steps=steps, delta=float(delta.reshape(-1)[0]), f_input=f_input, f_baseline=f_baseline,
        valid=mask[0].bool().cpu(), tokens=token_strings(processor, ids[0].cpu(), text),
    )


__all__ = [
    "Attribution", "integrated_gradients", "text_integrated_gradients", "target_forward", "pad_baseline",
    "token_strings", "embedding_layer", "DEFAULT_BASELINES",
]
