"""PEFT glue: inject LoRA / LoHa / LoKr / IA3 into one encoder, and merge the adapters back into its weights.

Adapters come from the PEFT library (``peft.inject_adapter_in_model`` on the encoder submodule), so the rest of
the model keeps its plain module names and the Trainer needs no special case. Methods: LoRA (Hu et al. 2021,
W + B·A·alpha/r), LoHa / LoKr (Hadamard / Kronecker-product low-rank updates, LyCORIS), IA3 (Liu et al. 2022,
learned per-channel scaling). The PEFT library is imported only when a strategy uses it.

This package sits below the models: it works on any module with ``encoders`` (a ModuleDict of encoders) and
imports nothing from models, training or recipes.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from ..config.finetune import FinetuneConfig

ADAPTABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


# ---------------------------------------------------------------------------------------------- targets


def adaptable_module_names(encoder: nn.Module) -> list[str]:
    """Full names of the Linear/Conv layers an adapter can wrap.

    Linear layers owned by ``nn.MultiheadAttention`` (``out_proj``) are left out: MHA reads their weight directly
    instead of calling them, so an adapter there would silently do nothing. Grouped convolutions (wav2vec2's
    positional conv, depthwise convs) are left out too: PEFT cannot merge a LoRA update into them, and merging
    is how a tuned model ships as a plain one.
    """
    skip = {f"{name}.{child}" if name else child for name, mod in encoder.named_modules()
            if isinstance(mod, nn.MultiheadAttention) for child, _ in mod.named_children()}
    return [name for name, mod in encoder.named_modules()
            if isinstance(mod, ADAPTABLE_TYPES) and name and name not in skip and getattr(mod, "groups", 1) == 1]


def resolve_target_modules(encoder: nn.Module, requested: list[str], encoder_name: str, key: str) -> list[str]:
    """Full module names for ``requested`` (a name matches a layer's full path or its last components).

    An empty request means every adaptable layer. A name that matches nothing raises ValueError listing the
    valid names, so a typo never silently trains nothing.
    """
    available = adaptable_module_names(encoder)
    if not available:
        raise ValueError(
            f"{key}: encoder {encoder_name!r} ({type(encoder).__name__}) has no Linear/Conv layer to adapt"
        )
    if not requested:
        return available
    matched: list[str] = []
    unknown = []
    for want in requested:
        hits = [n for n in available if n == want or n.endswith(f".{want}")]
        if not hits:
            unknown.append(want)
        matched.extend(h for h in hits if h not in matched)
    if unknown:
        short = sorted({n.rsplit(".", 1)[-1] for n in available})
        raise ValueError(
            f"{key}: {unknown} match no Linear/Conv layer of encoder {encoder_name!r} ({type(encoder).__name__}). "
            f"Valid names: {', '.join(short)} (or full paths: {', '.join(available[:20])}"
            f"{', ...' if len(available) > 20 else ''})"
        )
    return matched


def build_peft_config(method: str, cfg: FinetuneConfig, targets: list[str], feedforward: list[str]) -> Any:
    import peft

    lora = cfg.lora
    if method == "lora":
        return peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    if method == "loha":
        return peft.LoHaConfig(r=lora.r, alpha=lora.alpha, module_dropout=lora.dropout, target_modules=targets)
    if method == "lokr":
        return peft.LoKrConfig(r=lora.r, alpha=lora.alpha, module_dropout=lora.dropout, target_modules=targets)
    if method == "ia3":
        return peft.IA3Config(target_modules=targets, feedforward_modules=feedforward)
    raise ValueError(f"unknown PEFT method {method!r}; expected lora, loha, lokr or ia3")


def inject_peft(encoder: nn.Module, method: str, cfg: FinetuneConfig, encoder_name: str) -> list[str]:
    """Inject adapters into ``encoder`` in place; freeze its base weights. Returns the adapted module names."""
    try:
        import peft
    except ImportError as err:  # pragma: no cover - peft is a declared extra
        raise ImportError(f"finetune strategy {method!r} needs PEFT: pip install 'polymodal[peft]'") from err
    section = "ia3" if method == "ia3" else "lora"
    settings = cfg.ia3 if method == "ia3" else cfg.lora
    key = f"finetune.{section}.target_modules"
    requested = _for_encoder(settings.target_modules, encoder_name)
    targets = resolve_target_modules(encoder, requested, encoder_name, key if isinstance(
        settings.target_modules, list) else f"{key}.{encoder_name}")
    feedforward: list[str] = []
    if method == "ia3":
        wanted_ff = _for_encoder(cfg.ia3.feedforward_modules, encoder_name)
        ff = resolve_target_modules(
            encoder, wanted_ff, encoder_name, "finetune.ia3.feedforward_modules"
        ) if wanted_ff else []
        outside = [n for n in ff if n not in targets]
        if outside:
            raise ValueError(f"finetune.ia3.feedforward_modules: {outside} are not among the target modules")
        feedforward = ff
    for param in encoder.parameters():
        param.requires_grad_(False)
    peft.inject_adapter_in_model(build_peft_config(method, cfg, targets, feedforward), encoder)
    # Only adapter weights train (inject already does this; make it explicit so a PEFT change cannot widen it).
    for name, param in encoder.named_parameters():
        param.requires_grad_(_is_adapter_param(encoder, name))
    return targets


def _for_encoder(names: list[str] | dict[str, list[str]], encoder_name: str) -> list[str]:
    return list(names.get(encoder_name, [])) if isinstance(names, dict) else list(names)


def _tuner_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def _is_adapter_param(encoder: nn.Module, param_name: str) -> bool:
    for layer_name, layer in _tuner_layers(encoder):
        prefix = f"{layer_name}." if layer_name else ""
        for attr in layer.adapter_layer_names:
            if param_name.startswith(f"{prefix}{attr}."):
                return True
    return False


def has_adapters(module: nn.Module) -> bool:
    return bool(_tuner_layers(module))


# ---------------------------------------------------------------------------------------------- merge


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every PEFT adapter into its base layer and remove the wrappers, in place.

    The result is a plain MultimodalModel (no PEFT modules): ``save_pretrained`` writes an ordinary full model.
    Prompt-tuned encoders keep their prompts (they cannot be merged) and stay recorded in ``model.finetune``.
    """
    merged_encoders = []
    for enc_name, encoder in model.encoders.items():
        layers = _tuner_layers(encoder)
        if not layers:
            continue
        # Deepest first so nested wrappers unwrap cleanly; replace each wrapper by its merged base layer.
        for name, layer in sorted(layers, key=lambda item: -item[0].count(".")):
            layer.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = encoder.get_submodule(parent_name) if parent_name else encoder
            setattr(parent, child, layer.get_base_layer())
        if hasattr(encoder, "peft_config"):
            del encoder.peft_config
        merged_encoders.append(enc_name)
    record = getattr(model, "finetune", None)
    if record and merged_encoders:
        record = json.loads(json.dumps(record))
        strategies = {n: record.get("encoders", {}).get(n, record.get("default")) for n in model.encoders}
        # After merging, only prompt tuning still changes the architecture; otherwise the model is plain.
        if "prompt" in strategies.values():
            record.setdefault("encoders", {}).update({name: "frozen" for name in merged_encoders})
            model.finetune = record
        else:
            model.finetune = None
    return model


merge_lora = merge_adapters


__all__ = [
    "ADAPTABLE_TYPES",
    "adaptable_module_names",
    "build_peft_config",
    "has_adapters",
    "inject_peft",
    "merge_adapters",
    "merge_lora",
    "resolve_target_modules",
]
