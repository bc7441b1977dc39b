"""Save / load of a VisionLanguageModel: one self-contained directory that reloads offline with no other file.

    config.json          {"task": "captioning" | "vqa" | "transcription" | "chat", "architecture": "VisionLanguageModel",
                          "generate": decoding defaults, "vlm": VLMConfig, "decoder": HF config dict, ...}
    model.safetensors    every weight: encoders, connectors, decoder (tied weights saved once per name)
    tokenizer/           the tokenizer (save_pretrained), with its chat template
    hf/<modality>/       the HF config of a Hugging Face encoder, so it rebuilds without the original checkpoint

The decoder is rebuilt from its config dict (``decoders.causal_lm_from_config``: built-in transformers
architectures only), the tokenizer with ``trust_remote_code=False``: code inside the directory never runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from .. import __version__
from ..config import ConfigError, config_to_dict
from ..decoders import causal_lm_from_config, is_peft_model, merge_lora
from ..files import apply_plain_modes
from ..models.persistence import (
    CONFIG_NAME,
    HF_DIR,
    WEIGHTS_NAME,
    atomic_save_safetensors,
    atomic_write_text,
    save_hf_artifacts,
)
from .config import VLMConfig

ARCHITECTURE = "VisionLanguageModel"
TOKENIZER_DIR = "tokenizer"


def save_vlm(model: Any, directory: str | os.PathLike) -> Path:
    """Write ``model`` to ``directory`` (created if needed); files are replaced atomically one by one."""
    if is_peft_model(model.decoder) and getattr(model, "merge_lora_on_save", False):
        return _save_merged_copy(model, directory)
    if is_peft_model(model.decoder):
        raise ConfigError("the decoder still holds unmerged LoRA adapters; call model.merge_lora() before "
                          "save_pretrained, so the directory reloads as a plain model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: VLMConfig = dataclasses.replace(model.config, modalities=dict(model.config.modalities))
    with_config = {name: cfg.encoder for name, cfg in config.modalities.items() if cfg.encoder is not None}
    saved = save_hf_artifacts(with_config, model.encoders, {}, directory)
    for name, encoder_cfg in saved.items():
        config.modalities[name] = dataclasses.replace(config.modalities[name], encoder=encoder_cfg)
    model.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    apply_plain_modes(directory / TOKENIZER_DIR)
    payload = {
        "polymodal_version": __version__,
        "task": getattr(model, "task_name", "chat"),
        "architecture": ARCHITECTURE,
        "vlm": config_to_dict(config),
        "decoder": model.decoder.config.to_dict(),
        "custom_encoders": sorted(name for name in model.encoders if name not in with_config),
    }
    if getattr(model, "generation_defaults", None):
        payload["generate"] = dict(model.generation_defaults)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2))
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    atomic_save_safetensors(state, directory / WEIGHTS_NAME)
    return directory


def _save_merged_copy(model: Any, directory: str | os.PathLike) -> Path:
    """Save ``model`` with its LoRA adapters merged (W + B·A·α/r) into a copy of the decoder; the model itself
    keeps training with its adapters."""
    import copy

    decoder = model.decoder
    merged = merge_lora(copy.deepcopy(decoder))
    try:
        model.decoder = merged
        return save_vlm(model, directory)
    finally:
        model.decoder = decoder


def load_vlm(cls: type, directory: str | os.PathLike, *, encoders: dict[str, nn.Module] | None = None,
             map_location: str = "cpu") -> Any:
    """Rebuild a model written by :func:`save_vlm`. Raises ConfigError (file, key and what to do) when the
    directory is not such a model, an encoder module is needed, or the weights do not match the config."""
    from ..data.text import load_tokenizer
    from ..encoders.hf import load_time_trust

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path, directory / TOKENIZER_DIR):
        if not path.exists():
            raise ConfigError(f"{path} not found: is {directory} a directory written by "
                              f"VisionLanguageModel.save_pretrained?")
    try:
        payload = json.loads(config_path.read_text())
    except ValueError as err:
        raise ConfigError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(payload, dict) or payload.get("architecture") != ARCHITECTURE:
        found = payload.get("architecture") if isinstance(payload, dict) else None
        raise ConfigError(f"{config_path}: architecture is {found!r}, not {ARCHITECTURE!r}; load it with the class "
                          f"that saved it")
    config = VLMConfig.from_dict(payload.get("vlm", {}), prefix=f"{config_path}: vlm")
    with_config = {name: cfg.encoder for name, cfg in config.modalities.items() if cfg.encoder is not None}
    for name, encoder_cfg in with_config.items():
        if encoder_cfg.pretrained and encoder_cfg.pretrained.startswith(f"{HF_DIR}/"):
            with_config[name] = dataclasses.replace(encoder_cfg, pretrained=str(directory / encoder_cfg.pretrained))
    for name, encoder_cfg in load_time_trust(with_config, config_path, False).items():
        config.modalities[name].encoder = encoder_cfg
    needed = [name for name in payload.get("custom_encoders", []) if name not in (encoders or {})]
    if needed:
        raise ConfigError(f"{directory} was saved with encoder modules polymodal cannot rebuild for {needed}; pass "
                          f"them: from_pretrained(..., encoders={{{needed[0]!r}: module, ...}}) (weights are restored)")
    tokenizer = load_tokenizer(str(directory / TOKENIZER_DIR), trust_remote_code=False)
    decoder = causal_lm_from_config(payload.get("decoder"), where=f"{config_path}: decoder")
    model = cls.assemble(config, decoder, tokenizer, encoders, load_weights=False)
    state = load_file(str(weights_path), device=map_location)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ConfigError(f"{weights_path} does not match {config_path}: {err}") from err
    if missing or unexpected:
        raise ConfigError(f"{weights_path} does not match {config_path}: missing {missing[:5]}, unexpected "
                          f"{unexpected[:5]}")
    if isinstance(payload.get("task"), str):
        model.task_name = payload["task"]
    if isinstance(payload.get("generate"), dict):
        model.generation_defaults = dict(payload["generate"])
    model.to(map_location)
    model.eval()
    return model
