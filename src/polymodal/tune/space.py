"""Search spaces as data: a YAML file naming config keys and the distribution of each.

```yaml
metric: val_accuracy          # optional (CLI --metric wins); a per-epoch validation metric of the Trainer
direction: maximize           # optional (CLI --direction wins)
params:
  train.lr: {type: log_float, low: 1.0e-4, high: 3.0e-2}
  train.weight_decay: {type: float, low: 0.0, high: 0.1}
  model.fusion.dim: {type: int, low: 32, high: 128, step: 32}
  model.fusion.name: {type: categorical, choices: [concat, gated]}
  finetune.lora.r: {type: int, low: 2, high: 16, log: true}
```

Types: ``float`` (uniform; ``log: true`` or type ``log_float`` for log-uniform), ``int`` (``step``, ``log``),
``categorical`` (``choices``: strings, numbers, booleans, null). Any dotted key of the config may be searched;
each is checked against the config schema when the space is read (every bound and choice is put into the
config and validated), so a typo fails before the first trial with the config's own "did you mean" message.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, from_dict, load_yaml

TYPES = ("float", "log_float", "int", "categorical")


class SearchSpaceError(ConfigError):
    """A search-space file is malformed, or one of its keys / values does not fit the config. Names the file
    and the key."""


@dataclass
class Param:
    key: str  # dotted config key, e.g. train.lr
    type: str  # float | int | categorical (log_float is read as float + log)
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] = field(default_factory=list)

    def extremes(self) -> list[Any]:
        """Values that bound what a trial can get: checked against the config schema up front."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass
class SearchSpace:
    params: list[Param]
    metric: str | None = None
    direction: str | None = None
    source: str = "search space"

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial) -> dict[str, Any]:
        """One trial's values, by dotted key (an enqueued trial gets its fixed values back)."""
        return {param.key: param.suggest(trial) for param in self.params}

    def touches_data(self) -> bool:
        """Whether a trial's data loaders may differ from the base config's (then they are built per trial)."""
        return any(key.startswith(("data.", "model.modalities.")) for key in self.keys)


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchSpaceError(f"{where}: expected a finite number, got {value!r}")
    return value


def _parse_param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: params.{key}"
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{where}: expected a mapping like {{type: float, low: 0.0, high: 1.0}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise SearchSpaceError(f"{where}.type: {kind!r} is not one of {list(TYPES)}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SearchSpaceError(f"{where}: unknown field(s) {unknown} for type {kind}; allowed: {sorted(allowed)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}.choices: give a non-empty list, e.g. [concat, gated]")
        for i, choice in enumerate(choices):
            if choice is not None and not isinstance(choice, (str, int, float, bool)):
                raise SearchSpaceError(f"{where}.choices[{i}]: {choice!r} must be a string, number, boolean or null")
        return Param(key, "categorical", choices=list(choices))
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(f"{where}: type {kind} needs both low and high")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    log = kind == "log_float" or bool(spec.get("log", False))
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}.step")
        if step <= 0:
            raise SearchSpaceError(f"{where}.step: must be > 0, got {step}")
        if log:
            raise SearchSpaceError(f"{where}: step and log cannot be combined (optuna samples one or the other)")
    if low > high:
        raise SearchSpaceError(f"{where}: low {low} is above high {high}")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: a log scale needs low > 0, got {low}")
    if kind == "int":
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and float(value) != int(value):
                raise SearchSpaceError(f"{where}.{name}: type int needs an integer, got {value!r}")
    return Param(key, "int" if kind == "int" else "float", low=low, high=high, log=log, step=step)


def parse_space(data: Any, source: str = "search space") -> SearchSpace:
    """Plain data (a parsed YAML mapping) → SearchSpace; SearchSpaceError names ``source`` and the key."""
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{source}: expected a mapping with a 'params' section, got {type(data).__name__}")
    unknown = sorted(set(data) - {"params", "metric", "direction"})
    if unknown:
        raise SearchSpaceError(f"{source}: unknown top-level key(s) {unknown}; allowed: params, metric, direction")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise SearchSpaceError(f"{source}: 'params' must map config keys to distributions, e.g. "
                               "params: {train.lr: {type: log_float, low: 1.0e-4, high: 1.0e-2}}")
    direction = data.get("direction")
    if direction is not None and direction not in ("maximize", "minimize"):
        raise SearchSpaceError(f"{source}: direction {direction!r} must be maximize or minimize")
    metric = data.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise SearchSpaceError(f"{source}: metric must be a metric name like val_accuracy, got {metric!r}")
    return SearchSpace([_parse_param(str(k), v, source) for k, v in params.items()], metric, direction, source)


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"search space file {str(path)!r} does not exist (see configs/tune_space_example.yaml)")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except Exception as err:  # yaml errors and undecodable bytes alike: name the file
        raise SearchSpaceError(f"search space file {str(path)!r} is not valid YAML: {err}") from err
    return parse_space(data, source=str(path))


def apply_params(config_data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of plain config data with each dotted key set (sections created as needed)."""
    data = copy.deepcopy(config_data)
    for key, value in values.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SearchSpaceError(f"params.{key}: {part!r} is not a section of the config")
            node = child
        node[parts[-1]] = value
    return data


def validate_space(space: SearchSpace, config_data: dict[str, Any]) -> None:
    """Put every bound / choice of every parameter into the config and validate it (unknown keys, wrong types,
    out-of-range values) before any trial runs."""
    for param in space.params:
        for value in param.extremes():
            try:
                with warnings.catch_warnings():  # the config's own warnings are said once, by the trials
                    warnings.simplefilter("ignore")
                    from_dict(Config, apply_params(config_data, {param.key: value}))
            except ConfigError as err:
                raise SearchSpaceError(f"{space.source}: params.{param.key} = {value!r} does not fit the config: "
                                       f"{err}") from err
