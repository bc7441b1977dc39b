"""Native CLIP ↔ Hugging Face ``CLIPModel`` / open_clip weights: moved to ``polymodal.encoders.clip_convert``.

Kept so that ``from polymodal.alignment.convert import from_hf_clip`` (benchmarks, user code) keeps working;
new code imports from ``polymodal.encoders.clip_convert`` (encoders sit below alignment in the import graph).
"""

from ..encoders.clip_convert import (
    from_hf_clip,
    from_open_clip_state_dict,
    hf_config_from_native,
    hf_state_dict_to_native,
    native_config_from_hf,
    native_state_dict_to_hf,
    native_state_dict_to_open_clip,
    open_clip_config_from_state_dict,
    open_clip_state_dict_to_native,
    save_hf_clip,
    to_hf_clip,
)

__all__ = [
    "from_hf_clip",
    "from_open_clip_state_dict",
    "hf_config_from_native",
    "hf_state_dict_to_native",
    "native_config_from_hf",
    "native_state_dict_to_hf",
    "native_state_dict_to_open_clip",
    "open_clip_config_from_state_dict",
    "open_clip_state_dict_to_native",
    "save_hf_clip",
    "to_hf_clip",
]
