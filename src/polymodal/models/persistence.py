"""One model directory format for every task, and the one resolver of a saved model's kind: its recorded task.

A model directory holds::

    config.json         {"polymodal_version", "task": "classification" | "alignment" | ..., "model": {...},
                         + what the task saves beside it ("data", "finetune", "zeroshot", ...)}
    model.safetensors   the state dict (never a pickle)
    hf/<modality>/      the Hugging Face config + tokenizer / feature extractor of HF-backed encoders

Every file is written atomically (``files``), so an interrupted save leaves the previous version whole.
Directories written before the ``task`` field existed recorded an ``architecture`` (MultimodalModel,
AlignmentModel, EnsembleModel, VisionLanguageModel) and, for alignment, kept the model section under
``"alignment"``: :func:`read_model_config` translates that once, here, so nothing else guesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import PolymodalError
from ..files import apply_plain_modes, atomic_save_safetensors, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"  # peft.adapters writes it (an adapter-only save)
HF_DIR = "hf"

# The task each pre-``task`` architecture name stood for (directories saved by polymodal ≤ 0.x).
LEGACY_ARCHITECTURES = {"MultimodalModel": "classification", "AlignmentModel": "alignment",
                        "EnsembleModel": "classification", "VisionLanguageModel": "chat"}


class ModelDirectoryError(PolymodalError, ValueError):
    """A path that is not a readable polymodal model directory (missing / unreadable config.json, no task)."""


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a model directory with its ``task`` (and ``model`` section) in the current format; for an
    adapter-only save (no config.json), its adapter_config.json (which records the task too).

    Raises ModelDirectoryError naming the file when it is missing, not JSON, or records no task.
    """
    path = Path(directory) / CONFIG_NAME
    adapter = Path(directory) / ADAPTER_CONFIG_NAME
    if not path.is_file() and adapter.is_file():
        # an adapter-only save (peft.save_adapter): its task is in adapter_config.json; the task's loader reads
        # the base model it references
        path = adapter
    if not path.is_file():
        raise ModelDirectoryError(f"{path} not found: is {directory} a polymodal model directory (e.g. a run's "
                                  "best/)?")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirectoryError(f"{path} cannot be read as JSON: {err}") from err
    if not isinstance(payload, dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    if "task" not in payload and path.name == ADAPTER_CONFIG_NAME:
        payload = dict(payload, task="classification")  # adapters saved before they recorded a task: classifiers'
    if "task" not in payload:
        architecture = payload.get("architecture")
        if architecture not in LEGACY_ARCHITECTURES:
            raise ModelDirectoryError(f"{path} records no task (and no known architecture {architecture!r}): "
                                      "not a polymodal model directory")
        payload = dict(payload, task=LEGACY_ARCHITECTURES[architecture])
        if architecture == "AlignmentModel" and "alignment" in payload:
            payload["model"] = payload.pop("alignment")
    elif payload.get("kind") == "ensemble" and payload["task"] in ("multiclass", "binary", "multilabel"):
        # ensembles saved before the task field recorded their head's task under "task"
        payload = dict(payload, task="classification", head_task=payload["task"])
    return payload


def saved_task(directory: str | os.PathLike) -> str:
    """The task a model directory records (the only way polymodal tells model kinds apart)."""
    return str(read_model_config(directory)["task"])


def write_model_dir(directory: str | os.PathLike, task: str, model_section: Any, state: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """config.json (task + model section + ``extra`` entries) and model.safetensors, each written atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    section = dataclasses.asdict(model_section) if dataclasses.is_dataclass(model_section) else model_section
    payload = {"polymodal_version": __version__, "task": task, "model": section}
    payload.update({key: value for key, value in (extra or {}).items() if value is not None})
    atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2))
    atomic_save_safetensors({k: v.detach().contiguous() for k, v in state.items()}, directory / WEIGHTS_NAME)
    return directory


def load_weights(model: Any, weights_path: Path, map_location: str = "cpu") -> None:
    """Load model.safetensors into ``model`` strictly. Raises ValueError naming the file when its tensors do not
    match the model the config describes (missing / unexpected keys, or a shape mismatch)."""
    from safetensors.torch import load_file

    state = load_file(str(weights_path), device=map_location)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"{weights_path} does not match the config: {err}") from err
    if missing or unexpected:
        raise ValueError(f"{weights_path} does not match the config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")


def rebuild_saved_model(cls: Any, config: Any, payload: dict[str, Any], directory: Path, map_location: str = "cpu",
                        trust_remote_code: bool = False) -> Any:
    """``cls(config)`` as saved in ``directory``: HF encoder paths resolved against it, trust decided by the
    caller's argument only (``encoders.hf.load_time_trust``: a value saved in config.json is ignored), the saved
    finetune section re-applied (adapters / prompts exist before the weights load), the weights loaded strictly
    (:func:`load_weights`). The model is returned in eval mode; the class sets its own extra attributes."""
    from ..encoders.hf import load_time_trust  # heavy HF modules: imported when a model is actually loaded
    from ..peft import apply_finetune

    config.modalities = resolve_saved_paths(config.modalities, directory)
    config.modalities = load_time_trust(config.modalities, directory / CONFIG_NAME, trust_remote_code)
    model = cls(config, load_pretrained_weights=False)
    if payload.get("finetune"):
        apply_finetune(model, payload["finetune"])
    load_weights(model, directory / WEIGHTS_NAME, map_location)
    model.pretrained_dir = str(directory)
    return model.eval()


def resolve_saved_paths(modalities: dict, directory: Path) -> dict:
    """Modality configs whose ``pretrained`` is relative to the directory (``hf/<name>``) made absolute."""
    resolved = dict(modalities)
    for name, mcfg in modalities.items():
        if mcfg.pretrained and mcfg.pretrained.startswith(f"{HF_DIR}/"):
            resolved[name] = dataclasses.replace(mcfg, pretrained=str(directory / mcfg.pretrained))
    return resolved


def save_hf_artifacts(modalities: dict, encoders, processors: dict, directory: Path) -> dict:
    """Write each Hugging Face encoder (+ its tokenizer / feature extractor) under ``directory/hf/<name>/`` and
    return the modality configs with ``pretrained`` pointing there, so a saved model directory is self-contained."""
    saved = dict(modalities)
    for name, mcfg in modalities.items():
        encoder = encoders[name]
        if hasattr(encoder, "save_hf_artifacts"):
            hf_dir = directory / HF_DIR / name
            encoder.save_hf_artifacts(hf_dir)
            processor = processors.get(name)
            if processor is not None and hasattr(processor, "save_pretrained"):
                processor.save_pretrained(hf_dir)
            if hf_dir.exists():  # transformers writes safetensors through a private (0600) temp file
                apply_plain_modes(hf_dir)
            saved[name] = dataclasses.replace(mcfg, pretrained=f"{HF_DIR}/{name}")
    return saved


__all__ = ["CONFIG_NAME", "HF_DIR", "LEGACY_ARCHITECTURES", "WEIGHTS_NAME", "ModelDirectoryError",
           "atomic_save_safetensors", "atomic_write_text", "load_weights", "read_model_config", "rebuild_saved_model", "resolve_saved_paths",
           "save_hf_artifacts", "saved_task", "write_model_dir"]
