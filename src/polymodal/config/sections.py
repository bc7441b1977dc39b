"""The sections every run config shares: modalities (encoders + processors), the classification model, data,
train. Plain dataclasses; validation (types, bounds) is :mod:`.parse`'s ``from_dict``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .parse import ConfigError
from .values import bounds


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


# What ``encoder: auto`` means: the tiny from-scratch preset of each kind, or the Hugging Face encoder when
# ``pretrained`` is set. Data of the config layer, so a config's encoder can be named without importing encoders.
DEFAULT_PRESETS = {"image": "image_cnn", "audio": "audio_cnn", "text": "text_transformer"}
HF_ENCODER = "hf"


def resolve_encoder_name(cfg: ModalityConfig) -> str:
    """The encoder registry name ``cfg`` asks for ("auto" resolved). Raises ConfigError for an unknown kind."""
    if cfg.encoder != "auto":
        return cfg.encoder
    if cfg.pretrained:
        return HF_ENCODER
    if cfg.kind not in DEFAULT_PRESETS:
        raise ConfigError(f"unknown modality kind {cfg.kind!r}; expected one of {sorted(DEFAULT_PRESETS)}")
    return DEFAULT_PRESETS[cfg.kind]


@dataclass
class FusionConfig:
    name: str = "concat"
    dim: int = field(default=128, metadata=bounds(ge=1))  # every modality is projected to this width before fusion
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeadConfig:
    task: Literal["multiclass", "binary", "multilabel"] = "multiclass"
    # YAML writes `labels: [0, 1, 2]` as numbers; the data layer turns them into canonical strings
    # (data.manifest.normalize_labels), so numbers are accepted here as they are.
    labels: list[str | int | float] = field(default_factory=list)
    hidden: int = field(default=0, metadata=bounds(ge=0, note="0 = a single linear layer"))
    dropout: float = field(default=0.1, metadata=bounds(ge=0, lt=1))


@dataclass
class ModelConfig:
    """The ``model`` section of the classification task: encoders → projection → fusion → head."""

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
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    eval_batch_size: int = field(default=128, metadata=bounds(ge=1))
    num_workers: int = field(default=0, metadata=bounds(ge=0))
    # Use only N rows of each split (quick runs; built-in sets: evenly spaced).
    limit: int | None = field(default=None, metadata=bounds(ge=1, note="omit it to use every row"))
    augment: bool = False  # light augmentation of the train split (image crops/flips, SpecAugment masks)


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata=bounds(ge=1))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))  # optimizer steps; overrides epochs when set
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    # Learning rate for (unfrozen) encoders; defaults to lr.
    encoder_lr: float | None = field(default=None, metadata=bounds(gt=0, note="use finetune 'frozen' to keep an "
                                                                          "encoder fixed"))
    weight_decay: float = field(default=0.01, metadata=bounds(ge=0))
    warmup_ratio: float = field(default=0.05, metadata=bounds(ge=0, lt=1))
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_accum: int = field(default=1, metadata=bounds(ge=1))
    clip_grad_norm: float | None = field(default=1.0, metadata=bounds(ge=0, note="0 or null = no clipping"))
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    seed: int = field(default=0, metadata=bounds(ge=0))
    deterministic: bool = True
    # The metric that picks best/ and drives early stopping; None = the task's default (classification:
    # val_accuracy / max; alignment: val_loss / min). Without a validation split: train_loss / min.
    monitor: str | None = None
    monitor_mode: Literal["max", "min"] | None = None
    # Epochs without improvement; 0 = off.
    early_stopping_patience: int = field(default=0, metadata=bounds(ge=0, note="0 = off"))
    log_every: int = field(default=20, metadata=bounds(ge=0, note="0 = no step rows"))
    progress: bool = True
    out_dir: str = "runs/default"
    # Per sample, drop a whole modality with this probability.
    modality_dropout: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    # Where hyperparameters and metrics go (training/trackers.py): jsonl is always on; tensorboard and mlflow need
    # their packages (a clear error names the missing one).
    trackers: list[Literal["jsonl", "tensorboard", "mlflow"]] = field(default_factory=lambda: ["jsonl"])
    # Multi-process training (torchrun): ddp replicates the model on every rank; fsdp shards parameters, gradients
    # and optimizer state over the ranks (FSDP2 fully_shard; docs/DISTRIBUTED.md). One process ignores it.
    strategy: Literal["ddp", "fsdp"] = "ddp"
