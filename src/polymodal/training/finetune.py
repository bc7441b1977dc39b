"""Fine-tuning strategies: choose, per encoder, what trains — and account for it.

A ``finetune`` config section picks a strategy per encoder (``default`` for the ones not named)::

    finetune:
      default: full                 # full | frozen | linear_probe | lora | loha | lokr | ia3 | prompt
      encoders: {image: lora, text: frozen}
      lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [qkv, proj]}
      prompt: {num_tokens: 8}
      cache_features: auto          # auto | on | off
      init_from: runs/pretrain      # optional: encoder weights from a saved model / run directory

- ``full``: the encoder trains as built (an encoder with ``freeze: true`` in its modality config stays frozen).
- ``frozen``: encoder weights never change; the encoder stays in eval mode (BatchNorm statistics and dropout
  frozen too) even when the training loop calls ``model.train()``.
- ``linear_probe`` (``default`` only): every encoder, projection and the fusion are frozen; only the head trains.
- ``lora`` / ``loha`` / ``lokr`` / ``ia3``: PEFT adapters injected into the encoder's Linear/Conv layers
  (``peft.inject_adapter_in_model``); only adapter weights train. See :mod:`.peft_utils`.
- ``prompt``: learnable prompt tokens prepended to the encoder's transformer input; the base is frozen.
  See :mod:`.prompt_tuning`.

Projections, fusion and head train under every strategy except ``linear_probe``. A strategy other than ``full`` on
an encoder without learned weights is flagged when the config is read (:mod:`.finetune_warnings`);
``STRATEGY_DESCRIPTIONS`` is what ``polymodal list finetune`` prints.
``apply_finetune`` records the resolved config on the model (``model.finetune``) so ``save_pretrained`` writes it
to config.json and ``from_pretrained`` rebuilds the same architecture before loading weights.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from ..config import ConfigError, bounds, config_to_dict, from_dict

Strategy = Literal["full", "frozen", "linear_probe", "lora", "loha", "lokr", "ia3", "prompt"]
PEFT_STRATEGIES = ("lora", "loha", "lokr", "ia3")
# One line per strategy, shown by `polymodal list finetune`.
STRATEGY_DESCRIPTIONS: dict[str, str] = {
    "full": "every weight trains (encoders, projections, fusion, head); the default",
    "frozen": "the encoder's weights stay fixed (eval mode); projections, fusion and head train",
    "linear_probe": "every encoder, projection and the fusion stay fixed; only the head trains (finetune.default)",
    "lora": "low-rank adapters on the encoder's Linear/Conv layers train, its own weights stay fixed (PEFT LoRA)",
    "loha": "low-rank Hadamard-product adapters train, the encoder's weights stay fixed (PEFT LoHa)",
    "lokr": "low-rank Kronecker-product adapters train, the encoder's weights stay fixed (PEFT LoKr)",
    "ia3": "learned per-channel scaling vectors train, the encoder's weights stay fixed (PEFT IA3)",
    "prompt": "learnable prompt tokens before a transformer encoder's input train, its weights stay fixed",
}
# Strategies that keep the encoder's own weights fixed: only useful when those weights were learned.
FREEZING_STRATEGIES = ("frozen", "linear_probe", *PEFT_STRATEGIES, "prompt")


@dataclass
class LoraSettings:
    """Shared by lora, loha and lokr.

    ``target_modules``: layer names for every adapted encoder, or a mapping modality → names (encoders not in
    the mapping get every layer); [] = every Linear/Conv layer of the encoder.
    """

    r: int = field(default=8, metadata=bounds(ge=1))
    alpha: int = field(default=16, metadata=bounds(gt=0))
    dropout: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    target_modules: list[str] | dict[str, list[str]] = field(default_factory=list)


@dataclass
class IA3Settings:
    """``feedforward_modules`` (a subset of the targets) get their input scaled instead of their output."""

    target_modules: list[str] | dict[str, list[str]] = field(default_factory=list)
    feedforward_modules: list[str] | dict[str, list[str]] = field(default_factory=list)


@dataclass
class PromptSettings:
    num_tokens: int = field(default=8, metadata=bounds(ge=1))
    init_std: float = field(default=0.02, metadata=bounds(ge=0))


@dataclass
class FinetuneConfig:
    default: Strategy = "full"
    encoders: dict[str, Strategy] = field(default_factory=dict)  # modality name → strategy
    lora: LoraSettings = field(default_factory=LoraSettings)
    ia3: IA3Settings = field(default_factory=IA3Settings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    # Train fusion + head from cached encoder outputs: auto = when every encoder is frozen and augmentation is off.
    cache_features: Literal["auto", "on", "off"] = "auto"
    cache_dir: str | None = None  # default: <run dir>/feature_cache
    # A saved polymodal model directory (or a run directory: its best/) whose encoder weights start this run,
    # e.g. encoders pretrained by the classification or alignment recipe. Copied by modality name.
    init_from: str | None = None

    def strategy_for(self, modality: str) -> str:
        if self.default == "linear_probe":
            return "frozen"
        return self.encoders.get(modality, self.default)

    def validate(self, modalities: list[str]) -> None:
        """Raise ConfigError naming the key when the section does not fit the model's modalities."""
        for name, strategy in self.encoders.items():
            if name not in modalities:
                raise ConfigError(
                    f"finetune.encoders.{name}: the model has no modality {name!r}; modalities: {', '.join(modalities)}"
                )
            if strategy == "linear_probe":
                raise ConfigError(
                    f"finetune.encoders.{name}: linear_probe applies to the whole model (finetune.default); "
                    "use 'frozen' to freeze one encoder"
                )
            if self.default == "linear_probe" and strategy != "frozen":
                raise ConfigError(
                    f"finetune.encoders.{name}: {strategy!r} contradicts finetune.default=linear_probe "
                    "(every encoder is frozen)"
                )
        if self.prompt.num_tokens < 1:
            raise ConfigError(f"finetune.prompt.num_tokens: must be >= 1, got {self.prompt.num_tokens}")
        if self.lora.r < 1:
            raise ConfigError(f"finetune.lora.r: must be >= 1, got {self.lora.r}")


def parse_finetune_config(value: FinetuneConfig | dict[str, Any] | str | None,
                          modalities: list[str] | None = None) -> FinetuneConfig:
    """The ``finetune`` section as a FinetuneConfig; a bare string is shorthand for ``{default: <strategy>}``
    (``--finetune lora``). With ``modalities`` (non-empty), encoder names are checked against them too."""
    if value is None:
        return FinetuneConfig()
    if isinstance(value, str):
        value = {"default": value}
    cfg = from_dict(FinetuneConfig, value, "finetune")
    if modalities:
        cfg.validate(modalities)
    return cfg


# ---------------------------------------------------------------------------------------------- freezing


def _train_stays_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def keep_in_eval(module: nn.Module) -> None:
    """Put ``module`` in eval mode and keep it there when a parent calls ``.train()`` (BN stats, dropout)."""
    module.eval()
    module.train = types.MethodType(_train_stays_eval, module)  # type: ignore[method-assign]


def freeze_module(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)
    keep_in_eval(module)


def keep_norm_stats_frozen(module: nn.Module) -> None:
    """BatchNorm running statistics of a frozen base must not drift while adapters train (they are not saved)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            keep_in_eval(sub)


# ---------------------------------------------------------------------------------------------- apply


def load_encoder_weights(model: nn.Module, source: str) -> list[str]:
    """Copy encoder weights by modality name from a saved model directory (``config.json`` +
    ``model.safetensors``; a run directory means its ``best/``). Modalities the source lacks keep their weights.
    Returns the modalities loaded; a shape mismatch raises ValueError naming the modality and tensor."""
    from pathlib import Path

    from safetensors.torch import load_file

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
    """Mutate ``model`` (a MultimodalModel) to train per ``cfg``; return the parameter accounting.

    Call once, before building the optimizer (the Trainer optimizes parameters with ``requires_grad``).
    """
    from .peft_utils import inject_peft
    from .prompt_tuning import add_prompt_tuning

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
        for module in (model.projections, model.fusion):
            if module is not None:
                freeze_module(module)
    # Recorded for save_pretrained / from_pretrained (config.json "finetune" section). init_from is left out:
    # the saved weights already hold the initialisation, and reloading must not depend on that directory.
    model.finetune = dict(config_to_dict(cfg), init_from=None)
    return parameter_summary(model, strategies)


def is_trivial(cfg: FinetuneConfig | dict[str, Any] | None) -> bool:
    """True when the config changes nothing about the architecture or what trains (all ``full``)."""
    cfg = parse_finetune_config(cfg)
    return cfg.default == "full" and all(s == "full" for s in cfg.encoders.values())


# ---------------------------------------------------------------------------------------------- accounting


@dataclass
class ComponentCount:
    strategy: str
    total: int
    trainable: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


@dataclass
class FinetuneSummary:
    """Total / trainable parameters per component (``encoder.<name>``, projections, fusion, head) and overall."""

    components: dict[str, ComponentCount]
    total: int
    trainable: int

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for metrics.json."""
        return {
            "components": {
                name: {"strategy": c.strategy, "total": c.total, "trainable": c.trainable, "trainable_share": c.share}
                for name, c in self.components.items()
            },
            "total": self.total,
            "trainable": self.trainable,
            "trainable_share": self.trainable_share,
        }

    def format_table(self) -> str:
        rows = [(name, c.strategy, c.total, c.trainable, c.share) for name, c in self.components.items()]
        rows.append(("TOTAL", "", self.total, self.trainable, self.trainable_share))
        width = max(len(r[0]) for r in rows)
        lines = [f"{'component':<{width}}  {'strategy':<12} {'total':>12} {'trainable':>12} {'share':>8}"]
        for name, strategy, total, trainable, share in rows:
            lines.append(f"{name:<{width}}  {strategy:<12} {total:>12,} {trainable:>12,} {share:>8.2%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _count(module: nn.Module | None) -> tuple[int, int]:
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def parameter_summary(model: nn.Module, strategies: dict[str, str] | None = None) -> FinetuneSummary:
    """Parameter accounting of a MultimodalModel (any state: before or after apply_finetune)."""
    strategies = strategies or {}
    components: dict[str, ComponentCount] = {}
    for name, encoder in model.encoders.items():
        total, trainable = _count(encoder)
        default = "full" if trainable else "frozen"
        components[f"encoder.{name}"] = ComponentCount(strategies.get(name, default), total, trainable)
    heads = model.heads if getattr(model, "late", False) else model.head
    for label, module in (("projections", model.projections), ("fusion", model.fusion), ("head", heads)):
        total, trainable = _count(module)
        if total:
            components[label] = ComponentCount("full" if trainable else "frozen", total, trainable)
    total, trainable = _count(model)
    return FinetuneSummary(components=components, total=total, trainable=trainable)


__all__ = [
    "FREEZING_STRATEGIES",
    "FinetuneConfig",
    "STRATEGY_DESCRIPTIONS",
    "FinetuneSummary",
    "IA3Settings",
    "LoraSettings",
    "PEFT_STRATEGIES",
    "PromptSettings",
    "apply_finetune",
    "freeze_module",
    "is_trivial",
    "keep_in_eval",
    "load_encoder_weights",
    "parameter_summary",
    "parse_finetune_config",
]
