"""Attention weights of a MultimodalModel, captured with forward hooks, and attention rollout for ViT encoders.

The attention modules compute their weights inside ``F.scaled_dot_product_attention``, which never returns them.
A forward hook on each module re-computes them from the module's own projections and the same mask:

    A = softmax(Q Kᵀ / √d_h  with masked keys at −∞)     [B, H, N_q, N_k], rows sum to 1

(Vaswani et al. 2017) — for the from-scratch encoders' ``SelfAttention`` (image_vit, text / audio transformers)
and the fusions' ``MultiHeadAttention`` (transformer and cross_attention fusions). Query rows with no valid key
(an absent partner modality) are all zeros, as the module's output is zeroed there. Nothing in the model
changes; the hooks are removed on exit. Hugging Face encoders are asked for ``output_attentions`` instead (with
the eager attention kernel for that one call, since SDPA cannot return weights).

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL): per layer l,
Â_l = normalise_rows(0.5 · mean_heads(A_l) + 0.5 · I) (the identity stands for the residual connection), and
rollout = Â_L · … · Â_1 [N, N]; each row is a distribution over input tokens and sums to 1. For a ViT, the CLS
row over the patch tokens, reshaped to the patch grid, is the map of what the classification token draws on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..encoders.layers import SelfAttention, safe_key_mask
from ..fusion.attention import MultiHeadAttention


@dataclass
class AttentionMap:
    """Weights of one attention module in one forward call: ``weights`` [B, H, N_q, N_k]; ``module``: its path."""

    module: str
    weights: Tensor


def _split(x: Tensor, heads: int) -> Tensor:  # [B, N, D] → [B, H, N, D/H]
    batch, length, dim = x.shape
    return x.reshape(batch, length, heads, dim // heads).transpose(1, 2)


def _softmax_weights(query: Tensor, key: Tensor, attend: Tensor | None) -> Tensor:
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])  # [B, H, Nq, Nk]
    if attend is not None:
        scores = scores.masked_fill(~attend[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


def self_attention_weights(module: SelfAttention, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """The weights SelfAttention.forward(x [B, N, D], mask [B, N]) uses: [B, H, N, N] (encoders/layers.py)."""
    batch, length, dim = x.shape
    qkv = module.qkv(x).view(batch, length, 3, module.heads, dim // module.heads).permute(2, 0, 3, 1, 4)
    attend = None if mask is None else safe_key_mask(mask.bool())
    return _softmax_weights(qkv[0], qkv[1], attend)


def multi_head_attention_weights(module: MultiHeadAttention, query: Tensor, context: Tensor,
                                 context_mask: Tensor) -> Tensor | None:
    """The weights MultiHeadAttention.forward uses: [B, H, N_q, N_k]; rows of samples with no valid key are zeros
    (their output is zeroed there). None when the context is empty (nothing attended)."""
    if context.shape[1] == 0:
        return None
    context_mask = context_mask.bool()
    has_key = context_mask.any(-1)
    attend = context_mask | ~has_key.unsqueeze(-1)
    key, _ = module.key_value(context).chunk(2, dim=-1)
    weights = _softmax_weights(_split(module.query(query), module.heads), _split(key, module.heads), attend)
    return weights * has_key.to(weights.dtype)[:, None, None, None]


class AttentionRecorder:
    """``with AttentionRecorder(model) as recorder: model(batch)`` → ``recorder.maps``: one AttentionMap per
    attention call, in execution order (encoder blocks first, then fusion layers).

    Records every ``SelfAttention`` and ``MultiHeadAttention`` inside ``model`` (paths as in
    ``model.named_modules()``, e.g. ``encoders.image.transformer.blocks.0.attn``, ``fusion.blocks.1.attn``,
    ``fusion.streams.0.0.cross``). Weights are detached and kept on the CPU.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.maps: list[AttentionMap] = []
        self._handles: list = []

    def _hook(self, path: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            with torch.no_grad():
                if isinstance(module, SelfAttention):
                    x = args[0] if args else kwargs["x"]
                    mask = args[1] if len(args) > 1 else kwargs.get("mask")
                    weights = self_attention_weights(module, x, mask)
                else:
                    names = ("query", "context", "context_mask")
                    values = list(args) + [kwargs[n] for n in names[len(args):]]
                    weights = multi_head_attention_weights(module, *values)
            if weights is not None:
                self.maps.append(AttentionMap(path, weights.detach().float().cpu()))

        return hook

    def __enter__(self) -> AttentionRecorder:
        for path, module in self.model.named_modules():
            if isinstance(module, (SelfAttention, MultiHeadAttention)):
                self._handles.append(module.register_forward_hook(self._hook(path), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def under(self, prefix: str) -> list[AttentionMap]:
        """The maps of modules whose path starts with ``prefix`` (e.g. "encoders.image."), in call order."""
        return [m for m in self.maps if m.module.startswith(prefix)]


def hf_attentions(encoder: nn.Module, inputs: dict[str, Tensor]) -> list[Tensor]:
    """Per-layer attention weights [B, H, N, N] of an HF-backed encoder (``encoder.backbone``), or [] when the
    backbone returns none. Switches the backbone to eager attention for this call only (SDPA cannot return
    weights) and restores the previous kernel."""
    backbone = encoder.backbone
    config = backbone.config
    previous = getattr(config, "_attn_implementation", None)
    setter = getattr(backbone, "set_attn_implementation", None)
    try:
        if previous not in (None, "eager"):
            if setter is not None:
                setter("eager")
            else:  # transformers < 4.48 reads the private config attribute
                config._attn_implementation = "eager"
        with torch.no_grad():
            outputs = backbone(**encoder._model_inputs(inputs), output_attentions=True)
    finally:
        if previous not in (None, "eager"):
            if setter is not None:
                setter(previous)
            else:
                config._attn_implementation = previous
    attentions = getattr(outputs, "attentions", None) or ()
    return [a.detach().float().cpu() for a in attentions if a is not None]


def attention_rollout(layers: list[Tensor], residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of per-layer weights [B, H, N, N] (first layer first) → [B, N, N].

    Â_l = normalise_rows((1 − residual) · mean_heads(A_l) + residual · I); rollout = Â_L … Â_1. Every row sums
    to 1 (a product of row-stochastic matrices). Raises ValueError for no layers or mismatched shapes.
    """
    if not layers:
        raise ValueError("attention_rollout: no attention layers given")
    result = None
    for weights in layers:
        if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
            raise ValueError(f"attention_rollout: expected self-attention weights [B, H, N, N], got {list(weights.shape)}")
        mean = weights.float().mean(1)
        eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
        joint = (1.0 - residual) * mean + residual * eye
        joint = joint / joint.sum(-1, keepdim=True)
        result = joint if result is None else joint @ result
    return result


def cls_patch_map(rollout: Tensor) -> Tensor:
    """rollout [N, N] of a ViT (prefix tokens first — CLS, or CLS + distillation — then a square patch grid) →
    [g, g] map of the CLS row over the patches, renormalised to sum to 1. Without a prefix token (N a square,
    mean-pooled ViT) the mean row is used. Raises ValueError when no square grid fits."""
    tokens = rollout.shape[-1]
    for prefix in (1, 2, 0):
        grid = math.isqrt(max(tokens - prefix, 0))
        if grid > 0 and grid * grid == tokens - prefix:
            row = rollout[0, prefix:] if prefix else rollout.mean(0)
            return (row / row.sum().clamp_min(1e-12)).reshape(grid, grid)
    raise ValueError(f"cannot read {tokens} tokens as a CLS token + a square patch grid")


__all__ = [
    "AttentionMap", "AttentionRecorder", "attention_rollout", "cls_patch_map", "hf_attentions",
    "self_attention_weights", "multi_head_attention_weights",
]
