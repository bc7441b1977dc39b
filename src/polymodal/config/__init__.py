"""Dataclass configs ↔ YAML/JSON, validated with errors that name the offending key. The ground floor: this package
imports nothing from polymodal but ``errors``.

- :mod:`.parse`: the machinery (``from_dict``, overrides, YAML 1.2 reading, bounds) and :class:`ConfigError`;
- :mod:`.sections`: modalities, the classification model, data, train;
- :mod:`.alignment`: the alignment task's model / eval / zeroshot sections;
- :mod:`.finetune`: the finetune section;
- :mod:`.run`: :class:`RunConfig` (``Config``), one config for every task, and ``TASK_CONFIGS``.
"""

from .alignment import AlignmentConfig, AlignmentEvalConfig, ObjectiveConfig, ZeroShotConfig
from .parse import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    from_dict,
    parse_override,
    read_config_file,
    save_config,
)
from .run import (
    TASK_CONFIGS,
    Config,
    RunConfig,
    TaskConfigSpec,
    load_config,
    register_task_config,
    task_config,
)
from .sections import (
    DEFAULT_PRESETS,
    HF_ENCODER,
    DataConfig,
    FusionConfig,
    HeadConfig,
    ModalityConfig,
    ModelConfig,
    TrainConfig,
    resolve_encoder_name,
)
from .values import Bounds, YAML12Loader, bounds, load_yaml

__all__ = [
    "DEFAULT_PRESETS", "HF_ENCODER", "TASK_CONFIGS", "AlignmentConfig", "AlignmentEvalConfig", "Bounds", "Config",
    "ConfigError", "DataConfig", "FusionConfig", "HeadConfig", "ModalityConfig", "ModelConfig", "ObjectiveConfig",
    "RunConfig", "TaskConfigSpec", "TrainConfig", "YAML12Loader", "ZeroShotConfig", "apply_overrides", "bounds",
    "config_to_dict", "from_dict", "load_config", "load_yaml", "parse_override", "read_config_file",
    "register_task_config", "save_config", "resolve_encoder_name", "task_config",
]
