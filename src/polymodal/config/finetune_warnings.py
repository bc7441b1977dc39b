"""Fine-tuning choices that train but are almost never meant: a strategy that freezes randomly initialised weights.

``frozen``, ``linear_probe``, LoRA-style adapters (``lora``, ``loha``, ``lokr``, ``ia3``) and ``prompt`` keep an
encoder's own weights fixed; on an encoder with no learned weights (no ``pretrained`` checkpoint, nothing from
``finetune.init_from``) only small parts then train on top of random features. :func:`warn_untrained_frozen_encoders`
says so when a config is read (``Config.__post_init__``: train, bench, the demos), naming the encoders, the
strategy each one gets and how to choose per encoder. Reloading a saved model does not read a Config, so it is
silent.

Pure config logic, so it lives in the config layer: it reads the config and, for ``finetune.init_from``, only
the safetensors header of that directory's weights. Config is the one place every recipe (train, bench, the
demos, tune) reads its settings through, so the warning needs no call in each recipe.
"""

from __future__ import annotations

import warnings
from typing import Any

from .finetune import FREEZING_STRATEGIES, FinetuneConfig
from .sections import resolve_encoder_name


class FinetuneWarning(UserWarning):
    """A fine-tuning choice that trains but is very likely not what the user meant (e.g. LoRA on random weights)."""


def _init_from_encoders(source: str) -> set[str] | None:
    """Modality names whose encoder weights ``finetune.init_from`` provides (None when it cannot be read: the
    loading step reports that itself). Reads only the safetensors header."""
    from pathlib import Path

    from safetensors import safe_open

    directory = Path(source)
    if not (directory / "model.safetensors").exists() and (directory / "best" / "model.safetensors").exists():
        directory = directory / "best"
    try:
        with safe_open(str(directory / "model.safetensors"), "pt") as handle:
            keys = list(handle.keys())
    except Exception:  # missing or unreadable: peft.load_encoder_weights reports it when applied
        return None
    return {key.split(".")[1] for key in keys if key.startswith("encoders.") and key.count(".") >= 2}


def _has_learned_weights(mcfg: Any) -> bool:
    """A checkpoint named by the modality (``pretrained``) or by its encoder's options (``clip_vision`` /
    ``clip_text``: ``options.pretrained``)."""
    options = getattr(mcfg, "options", None) or {}
    return bool(getattr(mcfg, "pretrained", None) or options.get("pretrained"))


def untrained_frozen_encoders(modalities: dict[str, Any], cfg: FinetuneConfig) -> dict[str, str]:
    """modality → strategy for every encoder whose own weights ``cfg`` keeps fixed although they are random.

    An encoder has learned weights when its modality config names a ``pretrained`` checkpoint or when
    ``finetune.init_from`` holds weights for it; any other encoder starts from its random initialisation, and
    freezing it (``frozen``, ``linear_probe``, LoRA-style adapters, prompts, or ``freeze: true`` under ``full``)
    trains only small parts on top of random features.
    """
    loaded = _init_from_encoders(cfg.init_from) if cfg.init_from else set()
    found = {}
    for name, mcfg in modalities.items():
        if _has_learned_weights(mcfg) or loaded is None or name in loaded:
            continue
        strategy = "linear_probe" if cfg.default == "linear_probe" else cfg.encoders.get(name, cfg.default)
        if strategy == "full" and getattr(mcfg, "freeze", False):
            strategy = "frozen"  # model.modalities.<name>.freeze: true
        if strategy in FREEZING_STRATEGIES:
            found[name] = strategy
    return found


def warn_untrained_frozen_encoders(modalities: dict[str, Any], cfg: FinetuneConfig, stacklevel: int = 2) -> str | None:
    """Warn (FinetuneWarning) when a strategy freezes randomly initialised encoders; return the message, if any.

    Called when a config with a ``finetune`` section is read (train, bench, the fine-tuning demo), so the warning
    comes before any data is loaded. The message names the encoders, says which strategy applies to which
    encoder, and how to choose per encoder.
    """
    found = untrained_frozen_encoders(modalities, cfg)
    if not found:
        return None

    def encoder_of(name: str) -> str:
        try:
            return resolve_encoder_name(modalities[name])
        except Exception:  # an invalid kind is reported by the model builder
            return str(getattr(modalities[name], "encoder", "?"))

    def strategy_of(name: str) -> str:
        return "linear_probe" if cfg.default == "linear_probe" else cfg.encoders.get(name, cfg.default)

    named = [f"{name} ({encoder_of(name)})" for name in found]
    scratch = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
    strategies = sorted(set(found.values()))
    trains = {"frozen": "the projections, fusion and head", "linear_probe": "the head", "prompt": "prompt tokens"}
    what = sorted({trains.get(s, "adapters") for s in strategies})
    per_encoder = ", ".join(
        f"{name}={strategy_of(name)} ({'pretrained' if _has_learned_weights(mcfg) else 'random init'})"
        for name, mcfg in modalities.items()
    )
    learned = [name for name, mcfg in modalities.items() if _has_learned_weights(mcfg)]
    example = (f"--set finetune.default=full --set finetune.encoders.{learned[0]}={strategy_of(learned[0])}"
               if learned and strategy_of(learned[0]) != "linear_probe"
               else f"--set finetune.default=full, or --set finetune.encoders.{next(iter(found))}=full")
    message = (
        f"finetune: {'/'.join(strategies)} freezes the weights of {scratch}, which are randomly initialised "
        f"(no `pretrained` checkpoint, no finetune.init_from); on top of their random features only "
        f"{' and '.join(what)} will train. Strategy per encoder: {per_encoder}. Give these encoders learned weights "
        f"(pretrained, finetune.init_from) or choose the strategy per encoder with finetune.encoders, e.g. {example}."
    )
    warnings.warn(message, FinetuneWarning, stacklevel=stacklevel + 1)
    return message


__all__ = ["FinetuneWarning", "untrained_frozen_encoders", "warn_untrained_frozen_encoders"]
