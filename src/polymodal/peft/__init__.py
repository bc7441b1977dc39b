"""Parameter-efficient fine-tuning on a built model: freezing, LoRA-style adapters (PEFT), prompt tuning,
adapter-only saves, parameter accounting.

Below the models in the import graph (``models → peft → encoders / config``): loading a fine-tuned model imports
this package and never training code. The ``finetune`` config section it applies is plain data in
:mod:`polymodal.config.finetune`; the recipes decide when to apply it (``pipeline.train``), the Trainer only sees
which parameters have ``requires_grad``.

- :mod:`.apply`: ``apply_finetune(model, cfg)`` (one strategy per encoder), ``load_encoder_weights``;
- :mod:`.freeze`: freeze a module and keep it in eval mode;
- :mod:`.lora`: inject / merge PEFT adapters (LoRA, LoHa, LoKr, IA3);
- :mod:`.prompt`: prompt tuning;
- :mod:`.adapters`: adapter directories (``save_adapter``; loading: ``MultimodalModel.from_pretrained``);
- :mod:`.summary`: total / trainable parameters per component.
"""

from .adapters import is_adapter_dir, save_adapter, trainable_state_dict
from .apply import apply_finetune, load_encoder_weights
from .freeze import freeze_module, keep_in_eval
from .lora import adaptable_module_names, has_adapters, merge_adapters, merge_lora
from .prompt import add_prompt_tuning
from .summary import FinetuneSummary, parameter_summary

__all__ = [
    "FinetuneSummary",
    "adaptable_module_names",
    "add_prompt_tuning",
    "apply_finetune",
    "freeze_module",
    "has_adapters",
    "is_adapter_dir",
    "keep_in_eval",
    "load_encoder_weights",
    "merge_adapters",
    "merge_lora",
    "parameter_summary",
    "save_adapter",
    "trainable_state_dict",
]
