"""What `--resume` checks before it loads a checkpoint: the model being built is the run's model.

A resumed run rebuilds its model from the config it is given (the YAML file plus ``--set``), not from the run
directory. When that differs from the run's saved ``config.yaml`` in the model section, the checkpoint's weights
do not fit (or, worse, fit a different model by accident): the error names every key that differs, so the user
can repeat the run's ``--set`` values.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..config import ConfigError, config_to_dict, read_config_file

# Sections that decide the model's weights; `train` / `data` may change on resume (e.g. num_workers).
WEIGHT_SECTIONS = ("model",)


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Keys whose values differ between two plain-data configs, as ``key: <saved> in the run, <current> now``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        found: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            found += config_differences(saved.get(key), current.get(key), name)
        return found
    if saved != current:
        return [f"{prefix}: {saved!r} in the run, {current!r} now"]
    return []


def check_resume_config(run_dir: str | Path, config: Any) -> None:
    """Raise ConfigError when ``config``'s model section differs from the run directory's saved config.yaml.

    Nothing is checked when the run saved no config (a Trainer used without one) or ``config`` is None.
    """
    saved_path = Path(run_dir) / "config.yaml"
    if config is None or not saved_path.exists():
        return
    saved, current = read_config_file(saved_path), config_to_dict(config)
    differences = [d for section in WEIGHT_SECTIONS
                   for d in config_differences(saved.get(section), current.get(section), section)]
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise ConfigError(
            f"cannot resume {run_dir}: this config builds a different model than the run's ({saved_path}): {shown}. "
            "Resume with the same config and --set values as the run, or train into a new --out"
        )


def warn_if_finished(state: dict[str, Any], run_dir: str | Path) -> None:
    """A finished run has nothing to resume: say so instead of silently training zero steps."""
    if state.get("finished"):
        warnings.warn(
            f"{run_dir} already finished ({state.get('epoch', 0)} epochs, {state.get('global_step', 0)} optimizer "
            "steps): --resume continues an interrupted run and cannot extend a finished one (a larger "
            "train.epochs does not add epochs); to train further, start a new run from this one with "
            "--set finetune.init_from=RUN_DIR",
            stacklevel=3,
        )
