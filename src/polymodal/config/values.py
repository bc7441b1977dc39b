"""How config values are read: YAML 1.2 scalars (:func:`load_yaml`) and declared numeric ranges (:func:`bounds`).

Both are re-exported by :mod:`polymodal.config`, which applies them (``read_config_file``, ``parse_override``,
``from_dict``). This module imports nothing from polymodal, so every layer may declare ranges with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

# ---------------------------------------------------------------------------------------------- YAML reading

_BOOL_TAG, _INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
# YAML 1.1-only implicit types that YAML 1.2 (core schema) dropped: yes/no/on/off booleans, sexagesimal and
# 010-is-octal numbers, timestamps, and the "=" value key.
_DROPPED_TAGS = {_BOOL_TAG, _INT_TAG, _FLOAT_TAG, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}


class YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars (the rules of JSON and of most other tools).

    PyYAML implements YAML 1.1, where ``5e-5`` (no dot) is a string and ``off`` / ``no`` / ``y`` are booleans;
    users write both expecting a number and a word. Here booleans are only ``true`` / ``false`` (any of the
    three YAML spellings), integers are decimal (``0o`` / ``0x`` prefixes allowed, ``_`` between digits
    tolerated) and floats include exponent forms without a dot (``1e-3``, ``5E-5``, ``1e6``).
    """


YAML12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YAML12Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# Registered before floats: a resolver list is tried in order, and "5" must stay an int.
YAML12Loader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?[0-9]+(?:_[0-9]+)*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
YAML12Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:_[0-9]+)*(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    return sign * (int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10))  # 010 is ten, as in YAML 1.2


YAML12Loader.add_constructor(_INT_TAG, _construct_int)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`YAML12Loader` (``5e-5`` is a number, ``off`` is a word). Raises yaml.YAMLError."""
    return yaml.load(text, Loader=YAML12Loader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Bounds:
    """The valid range of a numeric field (any of the four limits may be None = unbounded)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def violated_by(self, value: float) -> bool:
        return (
            (self.gt is not None and not value > self.gt)
            or (self.ge is not None and not value >= self.ge)
            or (self.lt is not None and not value < self.lt)
            or (self.le is not None and not value <= self.le)
        )

    def describe(self) -> str:
        low = f"> {self.gt:g}" if self.gt is not None else f">= {self.ge:g}" if self.ge is not None else ""
        high = f"< {self.lt:g}" if self.lt is not None else f"<= {self.le:g}" if self.le is not None else ""
        if low and high:
            return f"in [{self.ge:g}, {self.lt:g})" if self.ge is not None and self.lt is not None else f"{low} and {high}"
        return low or high


def bounds(gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           note: str = "") -> dict[str, Any]:
    """Field metadata declaring a numeric range, checked by :func:`from_dict` (None values are not checked; for a
    list, every item is). ``note`` says what the special values mean (e.g. "0 = off") in the error message.

    ``x: float = field(default=0.1, metadata=bounds(ge=0, lt=1))``; a class may instead list its ranges in a
    ``CONFIG_BOUNDS = {"x": bounds(ge=0, lt=1)}`` class attribute (handy for long option dataclasses)."""
    return {"bounds": Bounds(gt, ge, lt, le), "bounds_note": note}


__all__ = ["Bounds", "YAML12Loader", "bounds", "load_yaml"]
