"""The sections of the alignment task: the dual / multi-tower model (``model``), its evaluation options (``eval``)
and the zero-shot classes saved with the model (``zeroshot``). Plain dataclasses, read by :mod:`.run`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .parse import ConfigError
from .sections import ModalityConfig
from .values import bounds


@dataclass
class ObjectiveConfig:
    name: str = "clip"  # registry name: clip | siglip | itm | mlm
    weight: float = field(default=1.0, metadata=bounds(ge=0))
    options: dict[str, Any] = field(default_factory=dict)  # constructor options of the objective


@dataclass
class AlignmentConfig:
    """The ``model`` section of the alignment task: one encoder + projection per modality into one space."""

    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    embed_dim: int = field(default=128, metadata=bounds(ge=1))
    projection: Literal["linear", "mlp"] = "linear"
    # MLP hidden width; default max(encoder width, embed_dim).
    projection_hidden: int | None = field(default=None, metadata=bounds(ge=1))
    objectives: list[ObjectiveConfig] = field(default_factory=lambda: [ObjectiveConfig()])
    pairs: list[list[str]] | None = None  # default: every pair of modalities, in config order
    init_logit_scale: float | None = None  # log-space; default log(1/0.07) (CLIP) or log(10) with siglip
    logit_scale_max: float = math.log(100.0)  # bound kept by projection after each optimizer step (CLIP's 100)
    learn_bias: bool | None = None  # learnable logit bias; default on when siglip is an objective
    init_logit_bias: float = -10.0


@dataclass
class ZeroShotConfig:
    """Zero-shot classification of an alignment model: evaluated on the test split and saved with the model.

    ``classnames`` are in label order (default: the data's labels; for the built-in spoken digits the words zero …
    nine); ``templates`` are per modality name, strings with one ``{}`` (default: per kind,
    ``metrics.zeroshot.DEFAULT_TEMPLATES``)."""

    classnames: list[str] | None = None
    templates: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class AlignmentEvalConfig:
    class_names: list[str] | None = None  # older spelling of zeroshot.classnames
    templates: dict[str, list[str]] = field(default_factory=dict)  # older spelling of zeroshot.templates
    ks: list[int] = field(default_factory=lambda: [1, 5, 10], metadata=bounds(ge=1))
    retrieval_metric: bool = True  # also log val_retrieval_R@1 each epoch (from the same pass as val_loss)


def reconcile_zeroshot(zeroshot: ZeroShotConfig, evaluation: AlignmentEvalConfig) -> None:
    """One source of truth downstream: eval.class_names / eval.templates filled from the zeroshot section (and
    back). Raises ConfigError when both are given and disagree."""
    for new, old in (("classnames", "class_names"), ("templates", "templates")):
        mine, theirs = getattr(zeroshot, new), getattr(evaluation, old)
        if mine and theirs and mine != theirs:
            raise ConfigError(f"zeroshot.{new} and eval.{old} disagree; keep only zeroshot.{new}")
        if mine:
            setattr(evaluation, old, mine)
        elif theirs:
            setattr(zeroshot, new, theirs)
