"""PEFT glue: inject LoRA / LoHa / LoKr / IA3 into one encoder, merge adapters, save / load adapter-only weights.

Adapters come from the PEFT library (``peft.inject_adapter_in_model`` on the encoder submodule), so the rest of
the model keeps its plain module names and the Trainer needs no special case.

Adapter directory (``save_adapter``)::

    adapter_config.json        format, finetune section, fusion/head config, base model dir + fingerprint
    adapter_model.safetensors  only the parameters that train (adapters, prompts, projections, fusion, head)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from .finetune import FinetuneConfig

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_FORMAT = "polymodal-adapter/1"
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


# ---------------------------------------------------------------------------------------------- save / load


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def trainable_state_dict(model: nn.Module) -> dict[str, Any]:
    """What training changes, detached — what an adapter directory stores.

    The parameters that train (requires_grad), plus the buffers that move with them: a fully trained encoder's
    BatchNorm running statistics change in every training step although they are not parameters, so leaving
    them out would reload the base's statistics and change the outputs. Norm layers of frozen / adapted
    encoders are locked in eval mode (finetune.keep_in_eval), so their statistics are the base's and stay out.
    """
    state = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    for module_name, module in model.named_modules():
        own_params = list(module.parameters(recurse=False))
        trains = any(p.requires_grad for p in own_params)
        updates_stats = isinstance(module, nn.modules.batchnorm._BatchNorm) and not _locked_in_eval(module)
        if not (trains or updates_stats):
            continue
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer is None or buffer_name in module._non_persistent_buffers_set:
                continue
            key = f"{module_name}.{buffer_name}" if module_name else buffer_name
            state[key] = buffer.detach().contiguous()
    return state


def _locked_in_eval(module: nn.Module) -> bool:
    from .finetune import _train_stays_eval

    return getattr(module.train, "__func__", None) is _train_stays_eval


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """Write only the trained weights + a reference to the base model directory (checked by fingerprint).

    ``base_dir`` defaults to the directory the model was loaded from (``model.pretrained_dir``).
    """
    from .. import __version__
    from ..config import config_to_dict
    from ..model import WEIGHTS_NAME, atomic_save_safetensors, atomic_write_text

    if not getattr(model, "finetune", None):
        raise ValueError("save_adapter needs a model prepared with apply_finetune; use save_pretrained for a full save")
    base_dir = base_dir or getattr(model, "pretrained_dir", None)
    if base_dir is None:
        raise ValueError(
            "save_adapter needs the base model directory: save the base first (model.save_pretrained(BASE) before "
            "apply_finetune) and pass base_dir=BASE, or use save_pretrained for a full save"
        )
    base_dir = Path(base_dir).resolve()
    base_weights = base_dir / WEIGHTS_NAME
    if not base_weights.exists():
        raise FileNotFoundError(f"{base_weights} not found: base_dir must be a saved polymodal model directory")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = config_to_dict(model.config)
    payload = {
        "format": ADAPTER_FORMAT,
        "polymodal_version": __version__,
        "finetune": model.finetune,
        "fusion": model_cfg["fusion"],
        "head": model_cfg["head"],
        "base_model": str(base_dir),
        "base_fingerprint": file_fingerprint(base_weights),
    }
    if getattr(model, "data_config", None) is not None:
        payload["data"] = model.data_config
    atomic_write_text(directory / ADAPTER_CONFIG_NAME, json.dumps(payload, indent=2))
    atomic_save_safetensors(trainable_state_dict(model), directory / ADAPTER_WEIGHTS_NAME)
    return directory


def load_adapter(directory: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                 map_location: str = "cpu", *, trust_remote_code: bool = False) -> nn.Module:
    """Rebuild base model + finetune strategy from an adapter directory; load base, then adapter weights.

    ``base_dir`` overrides the recorded base location (e.g. after moving both directories); the base weights
    must still match the recorded fingerprint. Code shipped in the base directory runs only with
    ``trust_remote_code=True`` (a saved value is ignored).
    """
    from ..config import ModelConfig, from_dict
    from ..encoders.hf import load_time_trust
    from ..model import CONFIG_NAME, HF_DIR, WEIGHTS_NAME, MultimodalModel
    from .finetune import apply_finetune

    directory = Path(directory)
    payload = json.loads((directory / ADAPTER_CONFIG_NAME).read_text())
    if payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{directory / ADAPTER_CONFIG_NAME}: not a polymodal adapter (format {payload.get('format')!r})")
    base = Path(base_dir or payload["base_model"])
    base_weights = base / WEIGHTS_NAME
    if not base_weights.exists():
        raise FileNotFoundError(
            f"{directory}: its base model {base} is missing ({base_weights} not found); pass base_dir=..."
        )
    if file_fingerprint(base_weights) != payload["base_fingerprint"]:
        raise ValueError(f"{directory}: base model {base} changed since the adapter was saved (fingerprint mismatch)")
    base_payload = json.loads((base / CONFIG_NAME).read_text())
    model_dict = dict(base_payload["model"], fusion=payload["fusion"], head=payload["head"])
    config = from_dict(ModelConfig, model_dict, "model")
    for name, mcfg in config.modalities.items():
        if mcfg.pretrained and mcfg.pretrained.startswith(f"{HF_DIR}/"):
            config.modalities[name] = dataclasses.replace(mcfg, pretrained=str(base / mcfg.pretrained))
    config.modalities = load_time_trust(config.modalities, base / CONFIG_NAME, trust_remote_code)
    model = MultimodalModel(config, load_pretrained_weights=False)
    adapter_state = load_file(str(directory / ADAPTER_WEIGHTS_NAME), device=map_location)
    base_state = load_file(str(base_weights), device=map_location)
    own = model.state_dict()
    # Base weights for everything the adapter does not replace (a new head may differ in shape from the base's).
    usable = {k: v for k, v in base_state.items() if k in own and k not in adapter_state and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    apply_finetune(model, payload["finetune"])
    own = model.state_dict()
    unexpected = [k for k in adapter_state if k not in own]
    if unexpected:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS_NAME} has weights the model lacks: {unexpected[:5]}")
    model.load_state_dict(adapter_state, strict=False)
    covered = set(usable) | set(adapter_state)
    # Injected layers rename base weights (x.weight → x.base_layer.weight); those were loaded before injection.
    missing = [k for k in own if k not in covered and ".base_layer." not in k]
    missing = [k for k in missing if k.replace(".base_layer", "") not in covered]
    if missing:
        raise ValueError(f"{directory}: no weights for {missing[:5]} in the adapter or the base model {base}")
    model.data_config = payload.get("data")
    model.pretrained_dir = str(base)
    model.eval()
    return model


def is_adapter_dir(directory: str | os.PathLike) -> bool:
    return (Path(directory) / ADAPTER_CONFIG_NAME).exists()


__all__ = [
    "adaptable_module_names",
    "file_fingerprint",
    "has_adapters",
    "inject_peft",
    "is_adapter_dir",
    "load_adapter",
    "merge_adapters",
    "merge_lora",
    "resolve_target_modules",
    "save_adapter",
    "trainable_state_dict",
]
