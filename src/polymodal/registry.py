"""One small Registry type; one registry per component kind.

Adding a component is: write a class, decorate it with ``@REGISTRY.register("name")``, add nothing else.
Tests enumerate the registries, so a newly registered component is tested the moment it exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps a short name to a component class (or factory function)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str | None = None) -> Callable:
        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            doc = description or (obj.__doc__ or "").strip().splitlines()[0:1]
            self._descriptions[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}.{suggestion} Available: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            # Unknown option names surface here; say which component rejected them.
            raise TypeError(f"{self.kind} {name!r}: {err}") from err

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        return {name: self._descriptions[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")
CONNECTORS = Registry("connector")
HEADS = Registry("head")
OBJECTIVES = Registry("objective")
DATASETS = Registry("dataset")
