"""Apply a ``finetune`` section to a built model: choose, per encoder, what trains.

- ``full``: the encoder trains as built (an encoder with ``freeze: true`` in its modality config stays frozen).
- ``frozen``: encoder weights never change; the encoder stays in eval mode (BatchNorm statistics and dropout
  frozen too) even when the training loop calls ``model.train()`` (:mod:`.freeze`).
- ``linear_probe`` (``default`` only): every encoder is frozen and the model's linear read-out trains. A classifier
  also freezes its projections and fusion: only the head trains. An aligner (``task_name == "alignment"``) has no
  head: its projections into the shared space are the linear read-out, so they train with the logit scale (and
  SigLIP bias, and the layers of ITM / MLM objectives), as in CLIP's linear-probe / LiT-style evaluation of
  frozen features (Radford et al. 2021 §3.2; Zhai et al. 2022).
- ``lora`` / ``loha`` / ``lokr`` / ``ia3``: PEFT adapters injected into the encoder's Linear/Conv layers; only
  adapter weights train (:mod:`.lora`).
- ``prompt``: learnable prompt tokens prepended to the encoder's transformer input; the base is frozen
  (:mod:`.prompt`).

Projections, fusion and head (an aligner's projections, logit scale and objective layers) train under every
strategy. ``apply_finetune`` records the
resolved config on the model (``model.finetune``) so ``save_pretrained`` writes it to config.json and
``from_pretrained`` rebuilds the same architecture before loading weights. The config section itself is plain
data (:mod:`polymodal.config.finetune`).

Below the models: a "model" here is any module with ``encoders`` (ModuleDict) and ``config.modalities``
(MultimodalModel, AlignmentModel); nothing from models, training or recipes is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from ..config import ConfigError, config_to_dict
from ..config.finetune import PEFT_STRATEGIES, FinetuneConfig, parse_finetune_config
from .freeze import freeze_module, keep_norm_stats_frozen
from .lora import inject_peft
from .prompt import add_prompt_tuning
from .summary import FinetuneSummary, parameter_summary


def load_encoder_weights(model: nn.Module, source: str) -> list[str]:
    """Copy encoder weights by modality name from a saved model directory (``config.json`` +
    ``model.safetensors``; a run directory means its ``best/``). Modalities the source lacks keep their weights.
    Returns the modalities loaded; a shape mismatch raises ValueError naming the modality and tensor."""
    directory = Path(source)
    if not (directory / "model.safetensors").exists() and (directory / "best" / "model.safetensors").exists():
        directory = directory / "best"
    weights = directory / "model.safetensors"
    if not weights.exists():
        raise ConfigError(f"finetune.init_from: {str(weights)!r} not found (expected a saved model or run directory)")
    state = load_file(str(weights))
    loaded = []
    for name, encoder in model.encoders.items():
        prefix = f"encoders.{name}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            continue
        own = encoder.state_dict()
        bad = [k for k, v in part.items() if k not in own or own[k].shape != v.shape]
        missing = [k for k in own if k not in part]
        if bad or missing:
            detail = bad[:3] or missing[:3]
            raise ValueError(
                f"finetune.init_from: encoder {name!r} in {weights} does not match this model's encoder "
                f"({'unexpected or different-shape' if bad else 'missing'} tensors {detail}); "
                "use the same encoder and options as the pretraining run"
            )
        encoder.load_state_dict(part)
        loaded.append(name)
    if not loaded:
        raise ValueError(
            f"finetune.init_from: {weights} has no encoder for any of this model's modalities {list(model.encoders)}"
        )
    return loaded


def apply_finetune(model: nn.Module, cfg: FinetuneConfig | dict[str, Any] | None) -> FinetuneSummary:
    """Mutate ``model`` (a MultimodalModel or AlignmentModel) to train per ``cfg``; return the parameter accounting.

    Call once, before building the optimizer (the Trainer optimizes parameters with ``requires_grad``). Raises
    ConfigError (a ``finetune.*`` key that does not fit the model), ValueError (an encoder the strategy cannot
    apply to, e.g. prompt tuning on a CNN, or LoRA target names that match no layer), RuntimeError (called twice).
    """
    cfg = parse_finetune_config(cfg)
    if getattr(model, "finetune", None):
        raise RuntimeError("apply_finetune was already called on this model (model.finetune is set)")
    names = list(model.encoders)
    cfg.validate(names)
    if cfg.init_from:
        load_encoder_weights(model, cfg.init_from)
    strategies: dict[str, str] = {}
    for name in names:
        encoder = model.encoders[name]
        strategy = cfg.strategy_for(name)
        modality_cfg = model.config.modalities[name]
        if strategy == "full" and modality_cfg.freeze:
            strategy = "frozen"  # the modality config asked for a frozen encoder; "full" does not override it
        if strategy == "frozen":
            freeze_module(encoder)
        elif strategy in PEFT_STRATEGIES:
            inject_peft(encoder, strategy, cfg, name)
            keep_norm_stats_frozen(encoder)
        elif strategy == "prompt":
            add_prompt_tuning(encoder, cfg.prompt, name)
            keep_norm_stats_frozen(encoder)
        strategies[name] = strategy
    if cfg.default == "linear_probe":
        for module in linear_probe_frozen(model):
            freeze_module(module)
    # Recorded for save_pretrained / from_pretrained (config.json "finetune" section). init_from is left out:
    # the saved weights already hold the initialisation, and reloading must not depend on that directory.
    model.finetune = dict(config_to_dict(cfg), init_from=None)
    return parameter_summary(model, strategies)


def linear_probe_frozen(model: nn.Module) -> list[nn.Module]:
    """What ``linear_probe`` freezes besides the encoders: a classifier's projections and fusion (the head is the
    probe); nothing on an aligner, whose projections (+ logit scale) are its linear read-out."""
    if getattr(model, "task_name", None) == "alignment":
        return []
    return [m for m in (getattr(model, "projections", None), getattr(model, "fusion", None)) if m is not None]


__all__ = ["apply_finetune", "linear_probe_frozen", "load_encoder_weights"]
