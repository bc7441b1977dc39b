"""One run config for every task: ``task`` + ``model`` / ``data`` / ``train`` / ``finetune`` + the task's own
sections. ::

    task: alignment            # classification (the default) | alignment | ... (`polymodal list tasks`)
    model: {...}               # the task's model section (ModelConfig, AlignmentConfig, ...)
    data: {...}                # DataConfig, the same for every task
    train: {...}               # TrainConfig, the same for every task (monitor defaults to the task's)
    finetune: lora             # optional, the same for every task
    zeroshot: {...}            # a section only some tasks read (alignment: eval, zeroshot)

What each task's sections are is data of this layer (:data:`TASK_CONFIGS`), so reading a config never imports
models or training code; ``register_task_config`` adds a task's sections (the task itself lives in
``polymodal.tasks``). A config without ``task:`` written before the key existed is read as the one task its keys
belong to, with a TaskKeyWarning naming the line to add; keys of another task than the one named (or of several)
fail with a message naming the key. A saved model's kind is never inferred: it records its task.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alignment import AlignmentConfig, AlignmentEvalConfig, ZeroShotConfig, reconcile_zeroshot
from .generation import GENERATION_TASKS, GenerateConfig, GenerationModelConfig, check_generation_model
from .parse import ConfigError, apply_overrides, from_dict, read_config_file
from .sections import DataConfig, ModelConfig, TrainConfig

COMMON_SECTIONS = ("task", "model", "data", "train", "finetune")


@dataclass(frozen=True)
class TaskConfigSpec:
    """What a task's config holds: the ``model`` section's dataclass, the task-only top-level sections, the default
    ``train.monitor`` / ``monitor_mode``, and an optional ``check(config)`` run after parsing (raises ConfigError)."""

    model: type
    sections: dict[str, type] = field(default_factory=dict)
    monitor: tuple[str, str] = ("val_loss", "min")
    check: Any = None
    description: str = ""


def _check_alignment(config: RunConfig) -> None:
    reconcile_zeroshot(config.sections["zeroshot"], config.sections["eval"])


TASK_CONFIGS: dict[str, TaskConfigSpec] = {
    "classification": TaskConfigSpec(
        model=ModelConfig, monitor=("val_accuracy", "max"),
        description="multiclass / binary / multilabel labels from any set of modalities (fusion + head)"),
    "alignment": TaskConfigSpec(
        model=AlignmentConfig, sections={"eval": AlignmentEvalConfig, "zeroshot": ZeroShotConfig},
        monitor=("val_loss", "min"), check=_check_alignment,
        description="dual / multi-tower contrastive embedding (clip, siglip, itm, mlm): retrieval and zero-shot"),
    **{name: TaskConfigSpec(
        model=GenerationModelConfig, sections={"generate": GenerateConfig}, monitor=("val_loss", "min"),
        check=check_generation_model, description=description)
       for name, description in zip(GENERATION_TASKS, (
           "image or audio → a description (encoders → connectors → causal LM)",
           "attachment + question → a short answer (several references; VQA accuracy, blind baseline)",
           "audio → its transcript (speech recognition; word error rate)",
           "multi-turn conversations with image / audio attachments"))},
}


def register_task_config(name: str, spec: TaskConfigSpec) -> None:
    """Make ``task: name`` readable. Raises ConfigError when another spec already has the name."""
    if name in TASK_CONFIGS and TASK_CONFIGS[name] is not spec:
        raise ConfigError(f"task {name!r} already has a config spec")
    TASK_CONFIGS[name] = spec


def task_config(name: str) -> TaskConfigSpec:
    """The spec of task ``name``. Raises ConfigError naming the known tasks (with a "did you mean")."""
    if name not in TASK_CONFIGS:
        hint = difflib.get_close_matches(str(name), TASK_CONFIGS, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"task: unknown task {name!r}{suggestion}; known tasks: {', '.join(TASK_CONFIGS)}")
    return TASK_CONFIGS[name]


def _owner_of(key: str, *, model_key: bool, task: str) -> str | None:
    """The other task(s) whose model section (model_key) or top-level sections hold ``key``, as a phrase for a
    message ("alignment", "captioning / vqa"); None when no other task has it."""
    owners = [other for other, spec in TASK_CONFIGS.items() if other != task and key in
              ({f.name for f in dataclasses.fields(spec.model)} if model_key else set(spec.sections))]
    return " / ".join(owners) if owners else None


# Tasks that existed before the ``task`` key: a config of theirs without the key is still read (with a warning).
LEGACY_TASKS = ("classification", "alignment")


@dataclass
class RunConfig:
    """A whole run: ``task`` and its sections. ``config.<section>`` reads a task-only section (``config.zeroshot``).

    Raises ConfigError (naming the key) for an unknown task, a model section of another type, a section the task
    does not read, and anything :func:`~.parse.from_dict` refuses.
    """

    task: str = "classification"
    model: Any = None  # the task's model section (TASK_CONFIGS[task].model); None = its defaults
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Fine-tuning strategy per encoder (finetune.FinetuneConfig); None = train everything as built.
    finetune: Any = None
    sections: dict[str, Any] = field(default_factory=dict)  # the task-only sections, by name

    def __post_init__(self) -> None:
        spec = task_config(self.task)
        if self.model is None:
            self.model = spec.model()
        elif isinstance(self.model, dict):
            self.model = from_dict(spec.model, self.model, "model")
        elif not isinstance(self.model, spec.model):
            raise ConfigError(f"model: task {self.task!r} takes a {spec.model.__name__} model section, got a "
                              f"{type(self.model).__name__}; set task to the model's task")
        unknown = sorted(set(self.sections) - set(spec.sections))
        if unknown:
            raise ConfigError(f"{unknown[0]}: task {self.task!r} has no such section (its sections: "
                              f"{', '.join([*COMMON_SECTIONS, *spec.sections])})")
        for name, cls in spec.sections.items():
            value = self.sections.get(name)
            self.sections[name] = cls() if value is None else from_dict(cls, value, name)
        self.train = _with_monitor(self.train, spec)
        if self.finetune is not None:
            # Parsed here, not typed as FinetuneConfig: a bare string is shorthand (--finetune lora). Bad values
            # raise ConfigError naming the finetune.* key.
            from .finetune import parse_finetune_config
            from .finetune_warnings import warn_untrained_frozen_encoders

            self.finetune = parse_finetune_config(self.finetune, list(self.model.modalities))
            # Said when the config is read (train, bench, demos), before data loads: freezing random weights
            # trains but is almost never meant.
            warn_untrained_frozen_encoders(self.model.modalities, self.finetune, stacklevel=4)
        if spec.check is not None:
            spec.check(self)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} of task {self.__dict__.get('task')!r} has no section {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data, task sections at the top level (the YAML a user writes)."""
        data = {"task": self.task, "model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train),
                "finetune": dataclasses.asdict(self.finetune) if dataclasses.is_dataclass(self.finetune)
                else self.finetune}
        data.update({name: dataclasses.asdict(value) for name, value in self.sections.items()})
        return data

    @classmethod
    def from_plain(cls, data: Any, prefix: str = "") -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__} {data!r}")
        data = dict(data)
        given = "task" in data
        task = data.pop("task", None) or _task_of_legacy_config(data)
        if not isinstance(task, str):
            raise ConfigError(f"task: expected a task name, got {task!r}")
        spec = task_config(task)
        for key in data:
            if key in COMMON_SECTIONS or key in spec.sections:
                continue
            owner = _owner_of(key, model_key=False, task=task)
            if owner is not None:
                raise ConfigError(f"{key}: this section belongs to the {owner} task, but the config's task is "
                                  f"{task!r}{'' if given else ' (the default)'}; set `task: "
                                  f"{owner.split(' / ')[0] if ' / ' not in owner else '<one of ' + owner + '>'}` at "
                                  "the top of the config")
            hint = difflib.get_close_matches(str(key), [*COMMON_SECTIONS, *spec.sections], n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown config key {key!r}{suggestion}; valid keys here: "
                              f"{', '.join([*COMMON_SECTIONS, *spec.sections])}")
        model = data.get("model")
        if isinstance(model, dict):
            fields = {f.name for f in dataclasses.fields(spec.model)}
            for key in model:
                owner = None if key in fields else _owner_of(key, model_key=True, task=task)
                if owner is not None:
                    raise ConfigError(f"model.{key}: a key of the {owner} task's model section, but the config's "
                                      f"task is {task!r}{'' if given else ' (the default)'}; set `task: {owner}` "
                                      "at the top of the config (or remove the key)")
        train = data.get("train")
        kwargs: dict[str, Any] = {"task": task}
        if model is not None:
            kwargs["model"] = from_dict(spec.model, model, "model")
        if "data" in data:
            kwargs["data"] = from_dict(DataConfig, data["data"], "data")
        if train is not None:
            kwargs["train"] = from_dict(TrainConfig, train, "train")
        if data.get("finetune") is not None:
            kwargs["finetune"] = data["finetune"]
        kwargs["sections"] = {name: data[name] for name in spec.sections if data.get(name) is not None}
        return cls(**kwargs)


class TaskKeyWarning(FutureWarning):
    """A config without ``task:`` whose sections belong to one other task: read as that task; add the line."""


def _task_of_legacy_config(data: dict[str, Any]) -> str:
    """The task of a config written before the ``task`` key existed: classification, unless its model section /
    top-level sections hold keys that only ONE other task has (an alignment config names ``embed_dim`` /
    ``objectives``, ``zeroshot``...). Such a config is read as that task with a TaskKeyWarning saying which line to
    add; keys of several tasks at once fall through to the key-naming errors of :meth:`RunConfig.from_plain`."""
    import warnings

    default = "classification"
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    own = {f.name for f in dataclasses.fields(TASK_CONFIGS[default].model)}
    foreign = [f"model.{key}" for key in model if key not in own]
    foreign += [key for key in data if key not in COMMON_SECTIONS]
    if not foreign:
        return default
    owners = set()
    for key in foreign:
        name = key.removeprefix("model.")
        owner = _owner_of(name, model_key=key.startswith("model."), task=default)
        if owner is None:
            return default  # an unknown key: from_plain names it
        owners.add(owner)
    if len(owners) != 1 or next(iter(owners)) not in LEGACY_TASKS:
        return default
    (task,) = owners
    theirs = {f.name for f in dataclasses.fields(TASK_CONFIGS[task].model)}
    if any(key in own and key not in theirs for key in model):  # keys of both tasks: nothing is inferred
        return default
    warnings.warn(f"this config has no `task:` line and {', '.join(foreign)} belong to the {task} task: read as "
                  f"`task: {task}`; add that line at the top of the config (a future version will not infer it)",
                  TaskKeyWarning, stacklevel=5)
    return task


def _with_monitor(train: TrainConfig, spec: TaskConfigSpec) -> TrainConfig:
    """train.monitor / monitor_mode with the task's defaults; a mode left out follows the metric's name (a loss
    is minimised, anything else maximised)."""
    if train.monitor is None:
        return dataclasses.replace(train, monitor=spec.monitor[0], monitor_mode=train.monitor_mode or spec.monitor[1])
    if train.monitor_mode is None:
        mode = spec.monitor[1] if train.monitor == spec.monitor[0] else ("min" if train.monitor.endswith("loss") else "max")
        return dataclasses.replace(train, monitor_mode=mode)
    return train


# The name every caller knows: one run config for every task.
Config = RunConfig


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = RunConfig) -> Any:
    """Read YAML/JSON (or start from defaults), apply ``key=value`` overrides, validate. Raises ConfigError."""
    data = read_config_file(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)
