"""Tasks: what a run learns and how it is judged. ``TASKS`` maps a task name (the config's top-level ``task:``,
recorded in every saved model directory) to a :class:`~.base.Task`; importing this package registers every task.

    task = get_task(config.task)             # the task of a run config
    model = load_model("runs/x/best")        # any saved model, by the task its config.json records
    task_of(model)                           # the task of a built or loaded model
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import PolymodalError
from ..models.persistence import read_model_config
from ..registry import TASKS
from . import alignment, classification, generation  # noqa: F401 (registers the tasks)
from .base import PreparedData, Task


class UnknownTaskError(PolymodalError, KeyError):
    """A task name nothing registered (config, saved model directory or model object)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_task(name: str) -> Task:
    """The task registered as ``name``. Raises UnknownTaskError listing the known ones."""
    try:
        return TASKS.get(name)()
    except KeyError as err:
        raise UnknownTaskError(str(err).strip("'\"")) from None


def task_of(model: Any) -> Task:
    """The task of a model object: its ``task_name`` (every polymodal model class sets it). Raises
    UnknownTaskError for an object that records none."""
    name = getattr(model, "task_name", None)
    if not isinstance(name, str):
        raise UnknownTaskError(f"a {type(model).__name__} records no task (task_name): not a polymodal model")
    return get_task(name)


def task_loss(model: Any, batch: Any) -> Any:
    """The scalar training loss of ``model`` on ``batch`` as its task defines it (models return outputs, the task
    turns them into a loss): for your own training loop, ``task_loss(model, batch).backward()``."""
    task = task_of(model) if isinstance(getattr(model, "task_name", None), str) else Task()  # a plain module
    return task.training_output(model, model(batch), batch).loss


def load_model(directory: str | os.PathLike, map_location: str = "cpu", *, trust_remote_code: bool = False) -> Any:
    """Any saved model directory, rebuilt by the task its config.json records (the one kind resolver).

    Raises ModelDirectoryError (not a model directory), UnknownTaskError (a task this install lacks), and what the
    task's loader raises (FileNotFoundError for missing weights, ValueError for mismatching ones)."""
    directory = Path(directory)
    payload = read_model_config(directory)
    return get_task(payload["task"]).load_model(directory, payload, map_location,
                                                trust_remote_code=trust_remote_code)


__all__ = ["TASKS", "PreparedData", "Task", "UnknownTaskError", "get_task", "load_model", "task_loss", "task_of"]
