"""Any Hugging Face ``AutoModelForCausalLM`` as the decoder, loaded without running code from the checkpoint.

``load_causal_lm`` reads a hub name or a local directory written by ``save_pretrained``;
``causal_lm_from_config`` rebuilds the architecture from a config dict only (random weights), which is how a
saved vision-language model directory restores its decoder before loading model.safetensors.

Code shipped with a checkpoint never runs: transformers always gets ``trust_remote_code=False``, and a config whose
architecture transformers does not know (an ``auto_map`` pointing at the directory's own modules) is refused with a
ConfigError naming the files, before transformers sees it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ConfigError


def _refuse_unknown_architecture(model_type: Any, where: str) -> None:
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not an architecture transformers ships, and polymodal never runs "
            f"code from a model directory (auto_map); use a checkpoint of a built-in causal LM family (Llama, GPT-2, "
            f"Qwen2, Mistral, ...) or convert it to one"
        )


def check_local_checkpoint(pretrained: str | Path) -> None:
    """ConfigError when a local directory cannot be loaded without its own code (see module doc)."""
    path = Path(pretrained) / "config.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable JSON config ({err}); was it written by save_pretrained?") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    _refuse_unknown_architecture(data.get("model_type"), str(path))


def load_causal_lm(pretrained: str | Path, revision: str | None = None, **overrides: Any) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(pretrained, trust_remote_code=False)``.

    ``pretrained``: a hub name (network or the local HF cache) or a directory written by ``save_pretrained``.
    ``overrides`` go to ``from_pretrained`` (e.g. ``dtype=torch.bfloat16``). Raises ConfigError when the
    checkpoint cannot be loaded or needs its own code.
    """
    from transformers import AutoModelForCausalLM

    pretrained = str(pretrained)
    if "trust_remote_code" in overrides:
        raise ConfigError(f"{pretrained}: trust_remote_code cannot be set for a decoder; polymodal loads only causal "
                          f"LM families transformers ships, without running code from the checkpoint")
    check_local_checkpoint(pretrained)
    try:
        model = AutoModelForCausalLM.from_pretrained(pretrained, revision=revision, trust_remote_code=False,
                                                     **overrides)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"cannot load the causal language model {pretrained!r}: {err}. Give a hub checkpoint name (needs the "
            f"network or a cached copy) or a local directory written by save_pretrained, of a causal LM family "
            f"transformers ships"
        ) from err
    model.eval()
    return model


def causal_lm_from_config(config: dict[str, Any], where: str = "decoder config") -> nn.Module:
    """The architecture described by a ``PretrainedConfig.to_dict()`` dict, randomly initialised.

    Raises ConfigError when ``model_type`` is missing or not a transformers architecture.
    """
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"{where}: expected a Hugging Face config dict with a 'model_type' key")
    _refuse_unknown_architecture(config["model_type"], where)
    values = {key: value for key, value in config.items() if key != "auto_map"}  # never point at foreign code
    hf_config = CONFIG_MAPPING[config["model_type"]].from_dict(values)
    try:
        return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False)
    except ValueError as err:
        raise ConfigError(f"{where}: {config['model_type']!r} has no causal language model head ({err})") from err
