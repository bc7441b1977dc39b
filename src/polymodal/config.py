"""Dataclass configs ↔ YAML/JSON, validated with errors that name the offending key.

A config is data: ``load_config("recipe.yaml", ["train.epochs=3"])`` gives a ``Config``;
``config_to_dict`` gives back plain JSON-ready data. Every saved run / model directory stores the
resolved config so any number can be traced to what produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import PolymodalError


class ConfigError(PolymodalError, ValueError):
    """A config key is unknown, missing, or has the wrong type. The message names the key."""


# ---------------------------------------------------------------------------------------------- sections


@dataclass
class ModalityConfig:
    """One input modality: which kind of data, which encoder, how to preprocess."""

    kind: Literal["image", "audio", "text"]
    encoder: str = "auto"  # registry name; "auto" = the tiny preset of this kind, or "hf" when pretrained is set
    pretrained: str | None = None  # Hugging Face checkpoint name or local directory
    freeze: bool = False
    column: str | None = None  # manifest column; defaults to the modality name
    options: dict[str, Any] = field(default_factory=dict)  # encoder constructor options
    processor: dict[str, Any] = field(default_factory=dict)  # processor options, validated by the processor


@dataclass
class FusionConfig:
    name: str = "concat"
    dim: int = 128  # every modality is projected to this width before fusion
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeadConfig:
    task: Literal["multiclass", "binary", "multilabel"] = "multiclass"
    labels: list[str] = field(default_factory=list)
    hidden: int = 0  # 0 = a single linear layer
    dropout: float = 0.1


@dataclass
class ModelConfig:
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class DataConfig:
    name: str | None = None  # a built-in data set (``polymodal list``), or None for manifests
    train: str | None = None  # manifest paths (JSONL or CSV)
    val: str | None = None
    test: str | None = None
    label_column: str = "label"
    id_column: str = "id"
    on_error: Literal["raise", "skip"] = "raise"
    batch_size: int = 32
    eval_batch_size: int = 128
    num_workers: int = 0
    limit: int | None = None  # use only N rows of each split (quick runs; built-in sets: evenly spaced)
    augment: bool = False  # light augmentation of the train split (image crops/flips, SpecAugment masks)


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    lr: float = 1e-3
    encoder_lr: float | None = None  # learning rate for (unfrozen) encoders; defaults to lr
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_accum: int = 1
    clip_grad_norm: float | None = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = True
    monitor: str = "val_accuracy"
    monitor_mode: Literal["max", "min"] = "max"
    early_stopping_patience: int = 0  # epochs without improvement; 0 = off
    log_every: int = 20
    progress: bool = True
    out_dir: str = "runs/default"
    modality_dropout: float = 0.0  # per sample, drop a whole modality with this probability


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Fine-tuning strategy per encoder (training/finetune.py FinetuneConfig); None = train everything as built.
    finetune: Any = None

    def __post_init__(self) -> None:
        # Parsed here, not typed as FinetuneConfig: training/ imports this module, so the type cannot be imported
        # at the top. Unknown keys and bad values still raise ConfigError naming the finetune.* key.
        if self.finetune is not None:
            from .training.finetune import parse_finetune_config

            self.finetune = parse_finetune_config(self.finetune, list(self.model.modalities))


# ---------------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert nested dataclasses. Raises ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from plain data; unknown keys and wrong types raise ConfigError naming the key."""
    where = prefix or "config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            suggestion = f" (did you mean {'.'.join([*filter(None, [prefix]), hint[0]])!r}?)" if hint else ""
            raise ConfigError(f"unknown config key {full!r}{suggestion}; valid keys here: {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], full)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing config key {'.'.join(filter(None, [prefix, missing[0]]))!r}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` → (["train", "epochs"], 3). Values are parsed as YAML (numbers, lists, true)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {str(path)!r} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from err
    return data or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Read YAML/JSON (or start from defaults), apply ``key=value`` overrides, validate."""
    data = read_config_file(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    payload = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    if path.suffix == ".json":
        path.write_text(json.dumps(payload, indent=2))
    else:
        path.write_text(yaml.safe_dump(payload, sort_keys=False))
