"""Import every module that registers components, so the registries are complete."""

from __future__ import annotations

import importlib

MODULES = [
    "polymodal.encoders",
    "polymodal.fusion",
    "polymodal.heads",
    "polymodal.objectives",
    "polymodal.data",
]


def load_all() -> None:
    for module in MODULES:
        importlib.import_module(module)
