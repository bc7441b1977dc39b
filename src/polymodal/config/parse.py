"""Dataclass configs ↔ YAML/JSON, validated with errors that name the offending key.

A config is data: ``load_config("recipe.yaml", ["train.epochs=3"])`` gives a ``RunConfig`` (:mod:`.run`);
``config_to_dict`` gives back plain JSON-ready data. Every saved run / model directory stores the
resolved config so any number can be traced to what produced it.

Values are read as users write them:

- YAML files and ``--set`` values go through :func:`load_yaml`, which reads scalars by the YAML 1.2 core
  schema: ``5e-5`` and ``1E-3`` are numbers (YAML 1.1, PyYAML's default, reads them as strings) and only
  ``true`` / ``false`` are booleans, so ``cache_features: off`` reaches the field as the word ``"off"``.
- :func:`from_dict` converts a value to its field's type when it parses cleanly: ``"5e-5"`` (a JSON string) for
  a float, ``1e6`` or ``"32"`` for an int, ``yes`` / ``no`` / ``on`` / ``off`` for a bool, and a boolean back to
  the documented word of an on/off choice; anything else raises :class:`ConfigError` naming the key.
- Every numeric field declares its valid range (:func:`bounds` metadata); it is checked when the config is
  read, so ``train.weight_decay=-5`` fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from ..errors import PolymodalError
from .values import Bounds, YAML12Loader, bounds, load_yaml  # noqa: F401 (re-exported)


class ConfigError(PolymodalError, ValueError):
    """A config key is unknown, missing, has the wrong type or is out of range. The message names the key."""


def _check_bounds(value: Any, metadata: Any, key: str) -> None:
    limits = metadata.get("bounds")
    if limits is None or value is None:
        return
    for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if limits.violated_by(item):
            where = key if i is None else f"{key}[{i}]"
            note = f" ({metadata['bounds_note']})" if metadata.get("bounds_note") else ""
            raise ConfigError(f"{where}: must be {limits.describe()}{note}, got {item!r}; set a value in that range")


# ---------------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_TRUE_WORDS = ("true", "yes", "on", "y")
_FALSE_WORDS = ("false", "no", "off", "n")
_INT_TEXT = re.compile(r"[-+]?[0-9]+(?:_[0-9]+)*")


def _as_number(value: Any) -> float | int | None:
    """A number from a number or a string that parses cleanly as one ("5e-5", " 32 "); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            return int(text.replace("_", ""))
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _literal(value: Any, choices: tuple[Any, ...], key: str) -> Any:
    """Accept a choice as written, in any case, or a YAML 1.1 boolean / yes-no word for an on/off choice."""
    if value in choices and not isinstance(value, bool):
        return value
    words = [c for c in choices if isinstance(c, str)]
    if isinstance(value, str):
        folded = [c for c in words if c.lower() == value.strip().lower()]
        if len(folded) == 1:
            return folded[0]
    # A boolean here came from a loader that follows YAML 1.1 (off → False) or from JSON true/false: map it back
    # to the field's own word for that state ("off", "no", "false"), never reject the documented value.
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS):
        state = value if isinstance(value, bool) else value.strip().lower() in _TRUE_WORDS
        for word in _TRUE_WORDS if state else _FALSE_WORDS:
            if word in words:
                return word
    raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert nested dataclasses. Raises ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        return _literal(value, get_args(tp), key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        word = value.strip().lower() if isinstance(value, str) else None
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS  # YAML 1.1 spellings (yes/no/on/off) keep working for true/false fields
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        number = _as_number(value)
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            number = int(number)  # 1e6 steps, or "1e3" from JSON
        if not isinstance(number, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return number
    if tp is float:
        number = _as_number(value)
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from plain data; unknown keys and wrong types raise ConfigError naming the key."""
    where = prefix or "config"
    if isinstance(data, cls):
        return data
    if hasattr(cls, "from_plain"):  # a run config: its model section's type depends on its task
        return cls.from_plain(data, prefix)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    class_bounds = getattr(cls, "CONFIG_BOUNDS", {})
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            suggestion = f" (did you mean {'.'.join([*filter(None, [prefix]), hint[0]])!r}?)" if hint else ""
            raise ConfigError(f"unknown config key {full!r}{suggestion}; valid keys here: {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], full)
        metadata = fields[key].metadata if "bounds" in fields[key].metadata else class_bounds.get(key, {})
        _check_bounds(kwargs[key], metadata, full)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing config key {'.'.join(filter(None, [prefix, missing[0]]))!r}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready data of a config dataclass (a run config flattens its task sections: ``to_dict``)."""
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` → (["train", "epochs"], 3). Values are parsed as YAML 1.2 (:func:`load_yaml`):
    numbers (``1e-3``), lists, ``true``/``false``; ``off`` stays the word ``"off"``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip() or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key before '=' must look like section.key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err}); quote it") from err
    return [part.strip() for part in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory: give the YAML or JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read as UTF-8 text: {err}") from err
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of sections (model, data, train, ...), "
                          f"got {type(data).__name__}")
    return data or {}


def save_config(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    payload = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    if path.suffix == ".json":
        path.write_text(json.dumps(payload, indent=2))
    else:
        path.write_text(yaml.safe_dump(payload, sort_keys=False))
