"""Load a saved model for evaluation and rebuild the config of the data it was trained on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def is_alignment(model: Any) -> bool:
    """True for a model of the alignment task (its recorded task, ``tasks.task_of``)."""
    from ...tasks import task_of

    return task_of(model).name == "alignment"


def load_any_model(path: str | Path) -> tuple[Any, Path]:
    """(model, model_dir): the model of a model directory or a run directory (its best/), rebuilt by the task its
    config.json records (``tasks.load_model``)."""
    from ...inference import resolve_model_dir
    from ...tasks import load_model

    model_dir = resolve_model_dir(path)
    return load_model(model_dir), model_dir


def run_dir_of(path: Path, model_dir: Path) -> Path | None:
    """The run directory of ``path`` (itself or the model directory's parent), or None for a bare model."""
    for candidate in (path, model_dir.parent):
        if (candidate / "metrics.jsonl").exists() or (candidate / "config.yaml").exists():
            return candidate
    return None


def run_config(run_dir: Path | None) -> dict[str, Any]:
    """The run's resolved config (config.yaml / .yml / .json) as a dict ({} without one).

    Raises ValueError naming the file when it cannot be parsed."""
    if run_dir is None:
        return {}
    import yaml

    for name in ("config.yaml", "config.yml", "config.json"):
        if (run_dir / name).exists():
            text = (run_dir / name).read_text()
            try:
                return (json.loads(text) if name.endswith(".json") else yaml.safe_load(text)) or {}
            except (json.JSONDecodeError, yaml.YAMLError) as err:
                raise ValueError(f"{run_dir / name} cannot be parsed: {err}") from err
    return {}


def eval_config_for(model: Any, data_manifest: str | None, split: str, run_config: dict[str, Any] | None = None):
    """The run config to evaluate a saved model: its task and model section + the data it was trained on (or a
    manifest) + the run's task sections (alignment: eval, zeroshot).

    Raises FileNotFoundError for a missing ``data_manifest`` and ValueError when the model records no data."""
    from ...config import TASK_CONFIGS, DataConfig, RunConfig, from_dict
    from ...tasks import task_of

    data = dict(getattr(model, "data_config", None) or (run_config or {}).get("data") or {})
    if data_manifest:
        if not Path(data_manifest).exists():
            raise FileNotFoundError(f"--data {data_manifest!r} does not exist")
        data.update({"name": None, "train": None, "val": None, "test": None, split: data_manifest})
    elif not data:
        raise ValueError("this model directory does not record its training data: pass --data MANIFEST")
    task = task_of(model).name
    spec = TASK_CONFIGS[task]
    sections = {name: (run_config or {}).get(name) for name in spec.sections
                if (run_config or {}).get(name) is not None}
    # a bare model directory: its decoding defaults (config.json "generate") stand in for the run's section
    saved_decoding = getattr(model, "generation_defaults", None)
    if "generate" in spec.sections and "generate" not in sections and saved_decoding:
        sections["generate"] = dict(saved_decoding)
    config = RunConfig(task=task, model=model_section(model.config, spec.model), data=from_dict(DataConfig, data, "data"),
                       sections=sections)
    if (run_config or {}).get("train", {}).get("seed") is not None:
        config.train = dataclasses.replace(config.train, seed=int(run_config["train"]["seed"]))
    return config


def model_section(config: Any, section: type) -> Any:
    """The task's ``model`` section for a loaded model's config: the config itself, or — when the model records
    only the part it is built from (a generation model's VLMConfig; the section GenerationModelConfig adds
    training-only keys to it) — the section with the model's values and the training keys at their defaults."""
    if isinstance(config, section) or not (dataclasses.is_dataclass(config) and issubclass(section, type(config))):
        return config
    return section(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


__all__ = ["eval_config_for", "is_alignment", "load_any_model", "model_section", "run_config", "run_dir_of"]
