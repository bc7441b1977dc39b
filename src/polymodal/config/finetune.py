"""The ``finetune`` config section as plain data: which strategy each encoder gets, and its settings.

::

    finetune:
      default: full                 # full | frozen | linear_probe | lora | loha | lokr | ia3 | prompt
      encoders: {image: lora, text: frozen}
      lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [qkv, proj]}
      prompt: {num_tokens: 8}
      cache_features: auto          # auto | on | off
      init_from: runs/pretrain      # optional: encoder weights from a saved model / run directory

This module is part of the config layer: it imports nothing from polymodal but the config modules and errors,
so reading a config never imports models or training code. Applying a strategy to a built model is
:func:`polymodal.peft.apply_finetune`; ``STRATEGY_DESCRIPTIONS`` is what ``polymodal list finetune`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .parse import ConfigError, from_dict
from .values import bounds

Strategy = Literal["full", "frozen", "linear_probe", "lora", "loha", "lokr", "ia3", "prompt"]
PEFT_STRATEGIES = ("lora", "loha", "lokr", "ia3")
# One line per strategy, shown by `polymodal list finetune`.
STRATEGY_DESCRIPTIONS: dict[str, str] = {
    "full": "every weight trains (encoders, projections, fusion, head); the default",
    "frozen": "the encoder's weights stay fixed (eval mode); projections, fusion and head train",
    "linear_probe": "every encoder stays fixed and the linear read-out trains: a classifier's head alone, an "
                    "aligner's projections + logit scale (finetune.default)",
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
    """Shared by lora, loha and lokr (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

    ``r``: adapter rank; ``alpha``: scaling numerator (the update is scaled by alpha / r); ``dropout`` on the
    adapter input. ``target_modules``: layer names for every adapted encoder, or a mapping modality → names
    (encoders not in the mapping get every layer); [] = every Linear/Conv layer of the encoder.
    """

    r: int = field(default=8, metadata=bounds(ge=1))
    alpha: int = field(default=16, metadata=bounds(gt=0))
    dropout: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    target_modules: list[str] | dict[str, list[str]] = field(default_factory=list)


@dataclass
class IA3Settings:
    """IA3 (Liu et al. 2022): ``feedforward_modules`` (a subset of the targets) get their input scaled instead of
    their output."""

    target_modules: list[str] | dict[str, list[str]] = field(default_factory=list)
    feedforward_modules: list[str] | dict[str, list[str]] = field(default_factory=list)


@dataclass
class PromptSettings:
    """Prompt tuning (Lester et al. 2021): ``num_tokens`` learnable tokens [P, D], initialised N(0, init_std²)."""

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
        """The strategy ``modality``'s encoder gets (``linear_probe`` freezes every encoder)."""
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
    (``--finetune lora``). With ``modalities`` (non-empty), encoder names are checked against them too.
    Raises ConfigError naming the ``finetune.*`` key."""
    if value is None:
        return FinetuneConfig()
    if isinstance(value, str):
        value = {"default": value}
    cfg = from_dict(FinetuneConfig, value, "finetune")
    if modalities:
        cfg.validate(modalities)
    return cfg


def is_trivial(cfg: FinetuneConfig | dict[str, Any] | None) -> bool:
    """True when the config changes nothing about the architecture or what trains (all ``full``)."""
    cfg = parse_finetune_config(cfg)
    return cfg.default == "full" and all(s == "full" for s in cfg.encoders.values())


__all__ = [
    "FREEZING_STRATEGIES",
    "FinetuneConfig",
    "IA3Settings",
    "LoraSettings",
    "PEFT_STRATEGIES",
    "PromptSettings",
    "STRATEGY_DESCRIPTIONS",
    "Strategy",
    "is_trivial",
    "parse_finetune_config",
]
