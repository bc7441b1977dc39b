"""One small Registry type; one registry per component kind.

Adding a component is: write a class, decorate it with ``@REGISTRY.register("name")``, add nothing else.
Tests enumerate the registries, so a newly registered component is tested the moment it exists.

Complete by construction: each registry names the package whose import registers all its entries, and imports
it on first read (``get`` / ``build`` / ``names`` / ``describe`` / ``in``), so no caller has to remember an import
and test-collection order cannot hide a missing one. tests/contracts/test_registries.py checks that every
``@REGISTRY.register("name")`` in the source tree is reached that way in a fresh interpreter.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps a short name to a component class (or factory function)."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        # the package whose import registers every entry; imported once, on the first read
        self.package = package
        self._loaded = package is None
        self._entries: dict[str, Callable[..., Any]] = {}
        self._descriptions: dict[str, str] = {}

    def _load(self) -> None:
        if not self._loaded:
            # set first: the package's own modules may read the registry while it is being imported
            self._loaded = True
            try:
                importlib.import_module(self.package)
            except BaseException:
                self._loaded = False  # a failed import is retried (and fails loudly again) on the next read
                raise

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
        self._load()
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
        self._load()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        return {name: self._descriptions[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


ENCODERS = Registry("encoder", "polymodal.encoders")
FUSIONS = Registry("fusion", "polymodal.fusion")
CONNECTORS = Registry("connector", "polymodal.connectors")
TASKS = Registry("task", "polymodal.tasks")
HEADS = Registry("head", "polymodal.heads")
OBJECTIVES = Registry("objective", "polymodal.objectives")
DATASETS = Registry("dataset", "polymodal.data.builtin")
