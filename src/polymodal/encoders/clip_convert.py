"""Weights in and out of the native CLIP: Hugging Face ``CLIPModel`` and open_clip state-dict layouts.

Native keys (``CLIPModelNative.state_dict()``)::

    visual.patch_embed.weight [Dv, C, p, p]      visual.class_embedding [Dv]   visual.position_embedding [1+P, Dv]
    visual.ln_pre / visual.ln_post               visual.transformer.blocks.N.{ln_1, qkv, out_proj, ln_2, fc1, fc2}
    text.token_embedding.weight [V, Dt]          text.position_embedding [L, Dt]
    text.transformer.blocks.N.{...}              text.ln_final
    visual_projection.weight [E, Dv]             text_projection.weight [E, Dt]      logit_scale []

``qkv`` is HF's q/k/v projections concatenated in that order, which is exactly open_clip's ``in_proj``.
Text pooling: HF pools at the first ``eos_token_id`` (or at the largest id when ``eos_token_id == 2``, its
legacy switch); open_clip always pools at the largest id (its EOT is the largest id of the vocabulary). The
native config records which one (``text_pool``), so converted models pool exactly like their source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from .clip_towers import CLIPModelNative, CLIPNativeConfig

_HF_TOWER = {"visual": "vision_model", "text": "text_model"}
# native block suffix → HF layer suffix (qkv handled apart: three HF tensors make one native one)
_HF_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "out_proj": "self_attn.out_proj",
             "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
_OC_BLOCK = {"ln_1": "ln_1", "ln_2": "ln_2", "out_proj": "attn.out_proj", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj",
             "qkv": "attn.in_proj"}
_HF_SINGLE = {  # native key → HF key, outside the blocks
    "visual.patch_embed.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.position_embedding": "vision_model.embeddings.position_embedding.weight",
    "text.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "text.position_embedding": "text_model.embeddings.position_embedding.weight",
    "visual_projection.weight": "visual_projection.weight",
    "text_projection.weight": "text_projection.weight",
    "logit_scale": "logit_scale",
}
_HF_NORMS = {"visual.ln_pre": "vision_model.pre_layrnorm", "visual.ln_post": "vision_model.post_layernorm",
             "text.ln_final": "text_model.final_layer_norm"}
_OC_SINGLE = {  # native key → open_clip key (projections are transposed: open_clip computes x @ proj)
    "visual.patch_embed.weight": "visual.conv1.weight",
    "visual.class_embedding": "visual.class_embedding",
    "visual.position_embedding": "visual.positional_embedding",
    "text.token_embedding.weight": "token_embedding.weight",
    "text.position_embedding": "positional_embedding",
    "logit_scale": "logit_scale",
}
_OC_NORMS = {"visual.ln_pre": "visual.ln_pre", "visual.ln_post": "visual.ln_post", "text.ln_final": "ln_final"}
_OC_TOWER = {"visual": "visual.transformer.resblocks", "text": "transformer.resblocks"}
_OC_PROJ = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}
# Keys that carry no weights: HF position_ids buffers, OpenAI/open_clip masks and metadata.
_IGNORED = re.compile(r"(position_ids|attn_mask|input_resolution|context_length|vocab_size)$")


# ------------------------------------------------------------------------------------------- configs


def native_config_from_hf(hf_config) -> CLIPNativeConfig:
    """HF ``CLIPConfig`` → CLIPNativeConfig; raises ValueError naming a field the native model cannot express."""
    v, t = hf_config.vision_config, hf_config.text_config
    for field in ("hidden_act", "layer_norm_eps"):
        if getattr(v, field) != getattr(t, field):
            raise ValueError(f"CLIP config: vision_config.{field}={getattr(v, field)!r} differs from "
                             f"text_config.{field}={getattr(t, field)!r}; the native CLIP shares one value")
    if v.hidden_act not in ("quick_gelu", "gelu"):
        raise ValueError(f"CLIP config: hidden_act {v.hidden_act!r} is not supported (quick_gelu, gelu)")
    vision_ratio, text_ratio = v.intermediate_size / v.hidden_size, t.intermediate_size / t.hidden_size
    if vision_ratio != text_ratio:
        raise ValueError(f"CLIP config: MLP ratio differs between towers ({vision_ratio} vs {text_ratio})")
    return CLIPNativeConfig(
        image_size=v.image_size, patch_size=v.patch_size, num_channels=v.num_channels,
        vision_width=v.hidden_size, vision_layers=v.num_hidden_layers, vision_heads=v.num_attention_heads,
        text_width=t.hidden_size, text_layers=t.num_hidden_layers, text_heads=t.num_attention_heads,
        mlp_ratio=vision_ratio, embed_dim=hf_config.projection_dim, vocab_size=t.vocab_size,
        context_length=t.max_position_embeddings, act=v.hidden_act, layer_norm_eps=v.layer_norm_eps,
        text_pool="argmax" if t.eos_token_id == 2 else "eos", eos_token_id=t.eos_token_id,
        logit_scale_init=hf_config.logit_scale_init_value,
    )


def hf_config_from_native(config: CLIPNativeConfig):
    """CLIPNativeConfig → HF ``CLIPConfig`` (argmax pooling is HF's ``eos_token_id=2`` switch)."""
    from transformers import CLIPConfig

    c = config
    common = dict(hidden_act=c.act, layer_norm_eps=c.layer_norm_eps, projection_dim=c.embed_dim)
    text = dict(vocab_size=c.vocab_size, hidden_size=c.text_width, intermediate_size=round(c.text_width * c.mlp_ratio),
                num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads,
                max_position_embeddings=c.context_length,
                eos_token_id=2 if c.text_pool == "argmax" else c.eos_token_id, **common)
    vision = dict(hidden_size=c.vision_width, intermediate_size=round(c.vision_width * c.mlp_ratio),
                  num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
                  num_channels=c.num_channels, image_size=c.image_size, patch_size=c.patch_size, **common)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=c.embed_dim,
                      logit_scale_init_value=c.logit_scale_init)


# ------------------------------------------------------------------------------------- key mapping


def _layers(config: CLIPNativeConfig):
    for tower, n in (("visual", config.vision_layers), ("text", config.text_layers)):
        for i in range(n):
            yield tower, i


def _take(source: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in source:
        raise KeyError(f"{what} state dict has no key {key!r} (found e.g. {sorted(source)[:5]})")
    return source[key]


def _check_consumed(source: Mapping[str, Tensor], used: set[str], what: str) -> None:
    unused = sorted(k for k in source if k not in used and not _IGNORED.search(k))
    if unused:
        raise KeyError(f"{what} state dict has {len(unused)} keys the native CLIP does not use: {unused[:8]}")


def hf_state_dict_to_native(state_dict: Mapping[str, Tensor], config: CLIPNativeConfig) -> dict[str, Tensor]:
    """HF ``CLIPModel.state_dict()`` → native keys; q/k/v are concatenated into one qkv."""
    src, out, used = state_dict, {}, set()

    def take(key: str) -> Tensor:
        used.add(key)
        return _take(src, key, "Hugging Face CLIP")

    for native, hf in _HF_SINGLE.items():
        out[native] = take(hf)
    for native, hf in _HF_NORMS.items():
        for p in ("weight", "bias"):
            out[f"{native}.{p}"] = take(f"{hf}.{p}")
    for tower, i in _layers(config):
        hf_prefix, prefix = f"{_HF_TOWER[tower]}.encoder.layers.{i}", f"{tower}.transformer.blocks.{i}"
        for p in ("weight", "bias"):
            out[f"{prefix}.qkv.{p}"] = torch.cat([take(f"{hf_prefix}.self_attn.{n}_proj.{p}") for n in "qkv"])
            for native, hf in _HF_BLOCK.items():
                out[f"{prefix}.{native}.{p}"] = take(f"{hf_prefix}.{hf}.{p}")
    _check_consumed(src, used, "Hugging Face CLIP")
    return out


def native_state_dict_to_hf(state_dict: Mapping[str, Tensor], config: CLIPNativeConfig) -> dict[str, Tensor]:
    """Native keys → HF ``CLIPModel`` keys (qkv split back into q_proj, k_proj, v_proj)."""
    out = {hf: state_dict[native] for native, hf in _HF_SINGLE.items()}
    for native, hf in _HF_NORMS.items():
        for p in ("weight", "bias"):
            out[f"{hf}.{p}"] = state_dict[f"{native}.{p}"]
    for tower, i in _layers(config):
        hf_prefix, prefix = f"{_HF_TOWER[tower]}.encoder.layers.{i}", f"{tower}.transformer.blocks.{i}"
        for p in ("weight", "bias"):
            for name, part in zip("qkv", state_dict[f"{prefix}.qkv.{p}"].chunk(3)):
                out[f"{hf_prefix}.self_attn.{name}_proj.{p}"] = part
            for native, hf in _HF_BLOCK.items():
                out[f"{hf_prefix}.{hf}.{p}"] = state_dict[f"{prefix}.{native}.{p}"]
    return out


def open_clip_state_dict_to_native(state_dict: Mapping[str, Tensor], config: CLIPNativeConfig) -> dict[str, Tensor]:
    """open_clip ``CLIP.state_dict()`` (ViT + default text tower) → native keys."""
    src, out, used = state_dict, {}, set()

    def take(key: str) -> Tensor:
        used.add(key)
        return _take(src, key, "open_clip")

    for native, oc in _OC_SINGLE.items():
        out[native] = take(oc)
    for native, oc in _OC_PROJ.items():
        out[native] = take(oc).t()
    for native, oc in _OC_NORMS.items():
        for p in ("weight", "bias"):
            out[f"{native}.{p}"] = take(f"{oc}.{p}")
    for tower, i in _layers(config):
        oc_prefix, prefix = f"{_OC_TOWER[tower]}.{i}", f"{tower}.transformer.blocks.{i}"
        for native, oc in _OC_BLOCK.items():
            sep = "_" if native == "qkv" else "."  # in_proj_weight vs out_proj.weight
            for p in ("weight", "bias"):
                out[f"{prefix}.{native}.{p}"] = take(f"{oc_prefix}.{oc}{sep}{p}")
    _check_consumed(src, used, "open_clip")
    return out


def native_state_dict_to_open_clip(state_dict: Mapping[str, Tensor], config: CLIPNativeConfig) -> dict[str, Tensor]:
    """Native keys → open_clip ``CLIP`` keys (the inverse of ``open_clip_state_dict_to_native``)."""
    out = {oc: state_dict[native] for native, oc in _OC_SINGLE.items()}
    out.update({oc: state_dict[native].t() for native, oc in _OC_PROJ.items()})
    for native, oc in _OC_NORMS.items():
        for p in ("weight", "bias"):
            out[f"{oc}.{p}"] = state_dict[f"{native}.{p}"]
    for tower, i in _layers(config):
        oc_prefix, prefix = f"{_OC_TOWER[tower]}.{i}", f"{tower}.transformer.blocks.{i}"
        for native, oc in _OC_BLOCK.items():
            sep = "_" if native == "qkv" else "."
            for p in ("weight", "bias"):
                out[f"{oc_prefix}.{oc}{sep}{p}"] = state_dict[f"{prefix}.{native}.{p}"]
    return out


def open_clip_config_from_state_dict(state_dict: Mapping[str, Tensor], act: str = "gelu",
                                     **overrides) -> CLIPNativeConfig:
    """Infer the architecture from an open_clip ViT state dict.

    Head counts are not stored in weights: they default to width / 64 (open_clip's default head width);
    pass ``vision_heads=`` / ``text_heads=`` for other models. ``act``: open_clip models use GELU unless their
    name ends in ``-quickgelu`` (OpenAI weights use quick_gelu).
    """
    conv = _take(state_dict, "visual.conv1.weight", "open_clip")
    vision_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    vocab_size = state_dict["token_embedding.weight"].shape[0]

    def count(prefix: str) -> int:
        return len({k.split(".")[len(prefix.split("."))] for k in state_dict if k.startswith(prefix + ".")})

    return CLIPNativeConfig(
        image_size=grid * patch, patch_size=patch, num_channels=conv.shape[1],
        vision_width=vision_width, vision_layers=count("visual.transformer.resblocks"), vision_heads=max(1, vision_width // 64),
        text_width=text_width, text_layers=count("transformer.resblocks"), text_heads=max(1, text_width // 64),
        mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width,
        embed_dim=state_dict["text_projection"].shape[1], vocab_size=vocab_size,
        context_length=state_dict["positional_embedding"].shape[0], act=act,
        text_pool="argmax", eos_token_id=vocab_size - 1,
    ) if not overrides else CLIPNativeConfig(**{**open_clip_config_from_state_dict(state_dict, act).to_dict(),
                                                **overrides})


# ------------------------------------------------------------------------------------ public API


def from_hf_clip(model_or_path, **config_overrides) -> CLIPModelNative:
    """A Hugging Face ``CLIPModel`` (object, local directory or hub name) → CLIPModelNative with its weights.

    ``config_overrides`` set non-architectural fields, e.g. ``gradient_checkpointing=True``.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        from transformers import CLIPModel

        # Explicit False: CLIPModel is built in; code a checkpoint ships is never run (None could prompt).
        model_or_path = CLIPModel.from_pretrained(str(model_or_path), trust_remote_code=False)
    config = native_config_from_hf(model_or_path.config)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    native = CLIPModelNative(config)
    native.load_state_dict(hf_state_dict_to_native(model_or_path.state_dict(), config))
    return native.to(next(model_or_path.parameters()).dtype)


def to_hf_clip(native: CLIPModelNative):
    """CLIPModelNative → an equivalent ``transformers.CLIPModel`` (eval mode, same dtype)."""
    from transformers import CLIPModel

    model = CLIPModel(hf_config_from_native(native.config))
    weights = {k: v.detach().clone() for k, v in native_state_dict_to_hf(native.state_dict(), native.config).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not _IGNORED.search(k)]
    if missing or unexpected:
        raise KeyError(f"export to HF CLIP: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return model.to(native.logit_scale.dtype).eval()


def save_hf_clip(native: CLIPModelNative, directory: str | os.PathLike) -> None:
    """Write ``directory`` so that ``transformers.CLIPModel.from_pretrained(directory)`` loads it."""
    to_hf_clip(native).save_pretrained(str(directory))


def from_open_clip_state_dict(state_dict: Mapping[str, Tensor], config: CLIPNativeConfig | None = None,
                              act: str = "gelu") -> CLIPModelNative:
    """An open_clip ViT CLIP state dict → CLIPModelNative (config inferred from shapes when None)."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}  # DDP-saved checkpoints
    config = config or open_clip_config_from_state_dict(state_dict, act=act)
    native = CLIPModelNative(config)
    native.load_state_dict(open_clip_state_dict_to_native(state_dict, config))
    return native
