"""Old import path of the alignment recipe. Alignment is the ``alignment`` task now (``polymodal.tasks``), trained
by the one train recipe (``polymodal.recipes.train``) from the one run config with ``task: alignment``; these
names are kept so user code keeps working. polymodal itself never imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import (  # noqa: F401
    AlignmentEvalConfig,
    RunConfig,
    ZeroShotConfig,
    apply_overrides,
    from_dict,
    read_config_file,
)
from ..jsonable import jsonable  # noqa: F401
from ..recipes.train import train
from ..tasks import get_task
from ..tasks.alignment import default_class_names, zeroshot_record  # noqa: F401


def alignment_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Plain data → the run config of the alignment task (``task: alignment`` implied)."""
    return from_dict(RunConfig, {**data, "task": data.get("task", "alignment")})


def load_alignment_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = read_config_file(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return alignment_config_from_dict(data)


def prepare_alignment_data(config: RunConfig, splits: tuple[str, ...] = ("train", "val", "test"),
                           processors: dict[str, Any] | None = None):
    return get_task("alignment").prepare_data(config, splits, processors)


def make_evaluate_fn(config: RunConfig):
    """The alignment task's validation as a Trainer evaluate_fn."""
    task = get_task("alignment")
    return lambda model, loader, device: task.validate(model, loader, device, None, config)


def train_alignment(config: RunConfig, resume: bool = False, run_dir: str | Path | None = None, verbose: bool = True,
                    prepared=None, evaluate_test: bool = True) -> dict[str, Any]:
    return train(config, resume=resume, run_dir=run_dir, verbose=verbose, prepared=prepared,
                 evaluate_test=evaluate_test)
