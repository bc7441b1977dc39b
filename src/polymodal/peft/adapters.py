"""Adapter directories: only what fine-tuning trained, plus a reference to the base model it applies to.

Adapter directory (``save_adapter``), for a classifier or an aligner::

    adapter_config.json        format, task, finetune section, base model dir + fingerprint; a classifier's
                               fusion/head config, an aligner's model section without modalities + zero-shot record
    adapter_model.safetensors  only the parameters that train (adapters, prompts, projections, fusion, head; an
                               aligner's projections, logit scale and objective layers)

Loading is two halves: :func:`read_adapter` checks the directory and the base weights' SHA-256 fingerprint and
reads both weight files; :func:`attach_adapter` applies the recorded strategy to a model built from the base
config and loads the weights into it. Building that model is the models layer's job
(``MultimodalModel.from_pretrained(adapter_dir)`` / ``AlignmentModel.from_pretrained(adapter_dir)``), so this
module imports nothing above it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn

from .. import __version__
from ..config import config_to_dict
from ..files import atomic_save_safetensors, atomic_write_text
from .apply import apply_finetune
from .freeze import is_locked_in_eval

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_FORMAT = "polymodal-adapter/1"
# The weights file of a saved model directory: polymodal.model.WEIGHTS_NAME (models import this package, not the
# reverse; tests/peft/test_peft_adapters.py checks the two agree).
BASE_WEIGHTS_NAME = "model.safetensors"


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of the file's bytes (read in ``chunk``-byte blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """What training changes, detached — what an adapter directory stores.

    The parameters that train (requires_grad), plus the buffers that move with them: a fully trained encoder's
    BatchNorm running statistics change in every training step although they are not parameters, so leaving
    them out would reload the base's statistics and change the outputs. Norm layers of frozen / adapted
    encoders are locked in eval mode (:func:`.freeze.keep_in_eval`), so their statistics are the base's and stay out.
    """
    state = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    for module_name, module in model.named_modules():
        own_params = list(module.parameters(recurse=False))
        trains = any(p.requires_grad for p in own_params)
        updates_stats = isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_locked_in_eval(module)
        if not (trains or updates_stats):
            continue
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer is None or buffer_name in module._non_persistent_buffers_set:
                continue
            key = f"{module_name}.{buffer_name}" if module_name else buffer_name
            state[key] = buffer.detach().contiguous()
    return state


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """Write only the trained weights + a reference to the base model directory (checked by fingerprint).

    ``model`` is a model prepared with :func:`.apply.apply_finetune`; ``base_dir`` defaults to the directory it
    was loaded from (``model.pretrained_dir``). Raises ValueError when the model was not fine-tuned or no base is
    known, FileNotFoundError when ``base_dir`` holds no saved model. Both files are written atomically.
    """
    if not getattr(model, "finetune", None):
        raise ValueError("save_adapter needs a model prepared with apply_finetune; use save_pretrained for a full save")
    base_dir = base_dir or getattr(model, "pretrained_dir", None)
    if base_dir is None:
        raise ValueError(
            "save_adapter needs the base model directory: save the base first (model.save_pretrained(BASE) before "
            "apply_finetune) and pass base_dir=BASE, or use save_pretrained for a full save"
        )
    base_dir = Path(base_dir).resolve()
    base_weights = base_dir / BASE_WEIGHTS_NAME
    if not base_weights.exists():
        raise FileNotFoundError(f"{base_weights} not found: base_dir must be a saved polymodal model directory")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = config_to_dict(model.config)
    task = getattr(model, "task_name", "classification")
    payload = {
        "format": ADAPTER_FORMAT,
        "polymodal_version": __version__,
        "task": task,
        "finetune": model.finetune,
        "base_model": str(base_dir),
        "base_fingerprint": file_fingerprint(base_weights),
    }
    if task == "alignment":
        # Encoders are the base's; the rest of the model section (embed dim, objectives...) is this model's.
        payload["model"] = {k: v for k, v in model_cfg.items() if k != "modalities"}
        payload["zeroshot"] = getattr(model, "zeroshot", None)
    else:
        payload["fusion"], payload["head"] = model_cfg["fusion"], model_cfg["head"]
    if getattr(model, "data_config", None) is not None:
        payload["data"] = model.data_config
    atomic_write_text(directory / ADAPTER_CONFIG_NAME, json.dumps(payload, indent=2))
    atomic_save_safetensors(trainable_state_dict(model), directory / ADAPTER_WEIGHTS_NAME)
    return directory


@dataclass
class AdapterFiles:
    """An adapter directory read and checked against its base: what :func:`attach_adapter` needs."""

    directory: Path
    payload: dict[str, Any]  # adapter_config.json
    base: Path  # the base model directory
    adapter_state: dict[str, Tensor]
    base_state: dict[str, Tensor]


def read_adapter(directory: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                 map_location: str = "cpu") -> AdapterFiles:
    """Read an adapter directory and its base model's weights.

    ``base_dir`` overrides the recorded base location (e.g. after moving both directories); the base weights must
    still match the recorded fingerprint. Raises ValueError (not an adapter, base changed) or FileNotFoundError
    (base missing), naming the directory.
    """
    directory = Path(directory)
    payload = json.loads((directory / ADAPTER_CONFIG_NAME).read_text())
    if payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{directory / ADAPTER_CONFIG_NAME}: not a polymodal adapter (format {payload.get('format')!r})")
    base = Path(base_dir or payload["base_model"])
    base_weights = base / BASE_WEIGHTS_NAME
    if not base_weights.exists():
        raise FileNotFoundError(
            f"{directory}: its base model {base} is missing ({base_weights} not found); pass base_dir=..."
        )
    if file_fingerprint(base_weights) != payload["base_fingerprint"]:
        raise ValueError(f"{directory}: base model {base} changed since the adapter was saved (fingerprint mismatch)")
    return AdapterFiles(
        directory=directory,
        payload=payload,
        base=base,
        adapter_state=load_file(str(directory / ADAPTER_WEIGHTS_NAME), device=map_location),
        base_state=load_file(str(base_weights), device=map_location),
    )


def attach_adapter(model: nn.Module, files: AdapterFiles) -> nn.Module:
    """Load base weights into ``model`` (built from the base config with the adapter's fusion/head), apply the
    recorded finetune strategy, then load the adapter weights; returns ``model`` in eval mode.

    Raises ValueError naming the files when a weight has no place in the model or the model has a weight neither
    file provides.
    """
    own = model.state_dict()
    adapter_state = files.adapter_state
    # Base weights for everything the adapter does not replace (a new head may differ in shape from the base's).
    usable = {k: v for k, v in files.base_state.items()
              if k in own and k not in adapter_state and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    apply_finetune(model, files.payload["finetune"])
    own = model.state_dict()
    unexpected = [k for k in adapter_state if k not in own]
    if unexpected:
        raise ValueError(f"{files.directory / ADAPTER_WEIGHTS_NAME} has weights the model lacks: {unexpected[:5]}")
    model.load_state_dict(adapter_state, strict=False)
    covered = set(usable) | set(adapter_state)
    # Injected layers rename base weights (x.weight → x.base_layer.weight); those were loaded before injection.
    missing = [k for k in own if k not in covered and ".base_layer." not in k]
    missing = [k for k in missing if k.replace(".base_layer", "") not in covered]
    if missing:
        raise ValueError(f"{files.directory}: no weights for {missing[:5]} in the adapter or the base model {files.base}")
    model.data_config = files.payload.get("data")
    model.pretrained_dir = str(files.base)
    model.eval()
    return model


def is_adapter_dir(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds an adapter save (``adapter_config.json``)."""
    return (Path(directory) / ADAPTER_CONFIG_NAME).exists()


__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_FORMAT",
    "ADAPTER_WEIGHTS_NAME",
    "AdapterFiles",
    "attach_adapter",
    "file_fingerprint",
    "is_adapter_dir",
    "read_adapter",
    "save_adapter",
    "trainable_state_dict",
]
