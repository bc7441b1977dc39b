"""Prompt tuning: learnable tokens prepended to a transformer encoder's input sequence; the base stays frozen.

Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning" (prompts in the input only).

Four kinds of transformer are supported, found by walking the encoder's submodules:

- the presets' ``TransformerStack`` (text_transformer, image_vit, audio_transformer): a forward pre-hook
  prepends the prompts to ``x`` [B, N, D] → [B, P+N, D] and extends ``mask`` [B, N] → [B, P+N] (True: prompts
  are real tokens); a forward hook strips the P prompt positions from the output;
- the native CLIP towers' ``layers.Transformer`` (clip_vision, clip_text): the same on ``x``; the prompts come
  first, so under causal attention (text) every token sees them and they see only earlier prompts (a learned
  prefix; VPT-shallow for the image tower); an explicit ``attn_mask`` [B, 1, N, N] (left padding) is extended
  to the same pattern. Only the towers' full forward is prompted (what the encoders call), not
  ``CLIPModelNative``'s one-query ``forward_pooled`` shortcut;
- a ``torch.nn.TransformerEncoder``: the same, with ``src_key_padding_mask`` (True there means padding);
- a Hugging Face model with an ``embeddings`` module (BERT, RoBERTa, ViT, DeiT...): a forward hook on the
  embeddings inserts the prompts right after the CLS token (position embeddings are already added, so the
  prompts are position-free), a pre-hook extends ``attention_mask`` [B, L] → [B, P+L], and a forward hook
  strips the prompt positions from ``last_hidden_state`` (and ``hidden_states``).

Stripping them again keeps the encoder's token grid unchanged: masks, pooling, fusion and feature caches
downstream see the same shapes, while every real token has attended to the prompts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config.finetune import PromptSettings

PROMPT_PARAM = "prompt_embeddings"


def _find_transformer(encoder: nn.Module) -> tuple[str, nn.Module] | None:
    from ..encoders.layers import TransformerStack
    from ..layers.transformer import Transformer

    for kind in ("stack", "native", "torch", "hf"):
        for _, module in encoder.named_modules():
            if kind == "stack" and isinstance(module, TransformerStack):
                return kind, module
            if kind == "native" and isinstance(module, Transformer):
                return kind, module
            if kind == "torch" and isinstance(module, nn.TransformerEncoder):
                return kind, module
            if kind == "hf" and _is_hf_model(module) and isinstance(getattr(module, "embeddings", None), nn.Module):
                return kind, module
    return None


def _is_hf_model(module: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, PreTrainedModel)


def add_prompt_tuning(encoder: nn.Module, settings: PromptSettings, encoder_name: str) -> nn.Parameter:
    """Freeze ``encoder`` and give it ``settings.num_tokens`` learnable prompt tokens (``encoder.prompt_embeddings``
    [P, D]). Raises ValueError when the encoder has no supported transformer."""
    found = _find_transformer(encoder)
    if found is None:
        raise ValueError(
            f"finetune: prompt tuning needs a transformer encoder (a preset or CLIP transformer, torch "
            f"nn.TransformerEncoder or a Hugging Face BERT/ViT-style model); encoder {encoder_name!r} "
            f"({type(encoder).__name__}) has none. "
            "Use lora, ia3 or frozen for it instead."
        )
    kind, transformer = found
    if kind == "stack":
        dim, batch_first = transformer.norm.normalized_shape[0], True
    elif kind == "native":
        dim, batch_first = transformer.blocks[0].ln_1.normalized_shape[0], True
    elif kind == "torch":
        first = transformer.layers[0]
        dim, batch_first = first.self_attn.embed_dim, first.self_attn.batch_first
    else:
        dim, batch_first = int(transformer.config.hidden_size), True
    for param in encoder.parameters():
        param.requires_grad_(False)
    prompts = nn.Parameter(torch.randn(settings.num_tokens, dim) * settings.init_std)
    encoder.register_parameter(PROMPT_PARAM, prompts)
    if kind == "stack":
        _hook_stack(transformer, encoder)
    elif kind == "native":
        _hook_native(transformer, encoder)
    elif kind == "torch":
        _hook_torch_transformer(transformer, encoder, batch_first)
    else:
        _hook_hf_model(transformer, encoder)
    return prompts


def _prompts_for(owner: nn.Module, batch: int, like: Tensor) -> Tensor:
    prompts = getattr(owner, PROMPT_PARAM).to(dtype=like.dtype, device=like.device)
    return prompts.unsqueeze(0).expand(batch, -1, -1)


def _extend_mask(mask: Tensor | None, num: int, at: int, real_value: float | bool) -> Tensor | None:
    if mask is None:
        return None
    # real_value is always 0 / 1 (True / False): ones_like / zeros_like + expand, not torch.full, whose bool fill
    # the ONNX tracer cannot export (aten::full alias-analysis assert), so prompt-tuned models export too.
    like = mask[:, :1]
    fill = (torch.ones_like(like) if real_value else torch.zeros_like(like)).expand(-1, num)
    return torch.cat([mask[:, :at], fill, mask[:, at:]], dim=1)


def _hook_stack(stack: nn.Module, owner: nn.Module) -> None:
    """TransformerStack.forward(x [B, N, D], mask [B, N] bool, True = real) → [B, N, D]."""
    num = getattr(owner, PROMPT_PARAM).shape[0]

    def before(module, args, kwargs):
        args = list(args)
        x = kwargs.pop("x") if "x" in kwargs else args.pop(0)
        mask = kwargs.pop("mask") if "mask" in kwargs else (args.pop(0) if args else None)
        x = torch.cat([_prompts_for(owner, x.shape[0], x), x], dim=1)
        return (x, _extend_mask(mask, num, 0, True)), {}

    def after(module, args, kwargs, output):
        return output[:, num:]

    stack.register_forward_pre_hook(before, with_kwargs=True)
    stack.register_forward_hook(after, with_kwargs=True)


def _hook_native(transformer: nn.Module, owner: nn.Module) -> None:
    """layers.Transformer.forward(x [B, N, D], causal, attn_mask [B, 1, N, N] bool or None, skip_last)."""
    num = getattr(owner, PROMPT_PARAM).shape[0]

    def before(module, args, kwargs):
        args = list(args)
        x = kwargs.pop("x") if "x" in kwargs else args.pop(0)
        causal = kwargs.pop("causal") if "causal" in kwargs else (args.pop(0) if args else False)
        attn_mask = kwargs.pop("attn_mask") if "attn_mask" in kwargs else (args.pop(0) if args else None)
        x = torch.cat([_prompts_for(owner, x.shape[0], x), x], dim=1)
        if attn_mask is not None:
            # Every token sees the prompts and the tokens it saw before; the prompts see the prompts (causal: the
            # earlier ones, as is_causal gives them when no mask is needed), never a token.
            batch, length = attn_mask.shape[0], attn_mask.shape[-1]
            among = torch.ones(num, num, dtype=torch.bool, device=attn_mask.device)
            among = (among.tril() if causal else among).to(attn_mask.dtype).expand(batch, 1, num, num)
            top = torch.cat([among, torch.zeros_like(attn_mask[:, :, :1, :1]).expand(batch, 1, num, length)], dim=-1)
            bottom = torch.cat([torch.ones_like(attn_mask[:, :, :, :1]).expand(batch, 1, length, num), attn_mask],
                               dim=-1)
            attn_mask = torch.cat([top, bottom], dim=2)
        return (x, causal, attn_mask, *args), kwargs

    def after(module, args, kwargs, output):
        return output[:, num:]

    transformer.register_forward_pre_hook(before, with_kwargs=True)
    transformer.register_forward_hook(after, with_kwargs=True)


def _hook_torch_transformer(transformer: nn.TransformerEncoder, owner: nn.Module, batch_first: bool) -> None:
    num = getattr(owner, PROMPT_PARAM).shape[0]

    def before(module, args, kwargs):
        args = list(args)
        src = kwargs.pop("src") if "src" in kwargs else args.pop(0)
        attn_mask = kwargs.get("mask", args[0] if args else None)
        if attn_mask is not None:
            raise ValueError("prompt tuning does not support an attention mask [N, N] on the transformer (causal?)")
        pad_mask = kwargs.pop("src_key_padding_mask", None)
        if len(args) > 1:
            pad_mask = args.pop(1)
        x = src if batch_first else src.transpose(0, 1)  # [B, N, D]
        x = torch.cat([_prompts_for(owner, x.shape[0], x), x], dim=1)
        # In src_key_padding_mask True (or -inf) means "ignore": prompts get False / 0.
        pad_mask = _extend_mask(pad_mask, num, 0, False if pad_mask is None or pad_mask.dtype == torch.bool else 0.0)
        src = x if batch_first else x.transpose(0, 1)
        kwargs["src_key_padding_mask"] = pad_mask
        return (src, *args), kwargs

    def after(module, args, kwargs, output):
        return output[:, num:] if batch_first else output[num:]

    transformer.register_forward_pre_hook(before, with_kwargs=True)
    transformer.register_forward_hook(after, with_kwargs=True)


def _hook_hf_model(hf_model: nn.Module, owner: nn.Module) -> None:
    num = getattr(owner, PROMPT_PARAM).shape[0]
    at = 1  # after the CLS token, so CLS pooling still reads position 0

    def extend_attention_mask(module, args, kwargs):
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = _extend_mask(kwargs["attention_mask"], num, at, 1)
        elif len(args) > 1 and args[1] is not None:
            raise ValueError("prompt tuning: pass attention_mask to the Hugging Face model as a keyword argument")
        return args, kwargs

    def insert_prompts(module, args, output):
        return torch.cat([output[:, :at], _prompts_for(owner, output.shape[0], output), output[:, at:]], dim=1)

    def strip(hidden: Tensor) -> Tensor:
        return torch.cat([hidden[:, :at], hidden[:, at + num:]], dim=1)

    def strip_outputs(module, args, kwargs, output):
        if getattr(output, "last_hidden_state", None) is not None:
            output.last_hidden_state = strip(output.last_hidden_state)
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(strip(h) for h in output.hidden_states)
        return output

    hf_model.register_forward_pre_hook(extend_attention_mask, with_kwargs=True)
    hf_model.embeddings.register_forward_hook(insert_prompts)
    hf_model.register_forward_hook(strip_outputs, with_kwargs=True)


__all__ = ["add_prompt_tuning", "PROMPT_PARAM"]
