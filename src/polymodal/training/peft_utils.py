"""Compatibility names: the PEFT glue moved to :mod:`polymodal.peft` (below the models, so loading a model never
imports training code). Injection and merging: :mod:`polymodal.peft.lora`; adapter directories:
:mod:`polymodal.peft.adapters`, loaded by ``MultimodalModel.from_pretrained`` (:func:`polymodal.model.load_adapter`).
"""

from __future__ import annotations

from ..models import load_adapter
from ..peft.adapters import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_FORMAT,
    ADAPTER_WEIGHTS_NAME,
    file_fingerprint,
    is_adapter_dir,
    save_adapter,
    trainable_state_dict,
)
from ..peft.lora import (
    ADAPTABLE_TYPES,
    adaptable_module_names,
    build_peft_config,
    has_adapters,
    inject_peft,
    merge_adapters,
    merge_lora,
    resolve_target_modules,
)

__all__ = [
    "ADAPTABLE_TYPES",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_FORMAT",
    "ADAPTER_WEIGHTS_NAME",
    "adaptable_module_names",
    "build_peft_config",
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
