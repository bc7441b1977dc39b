"""Presets as data: named settings shipped as YAML files inside the package, read by one loader.

Layout: ``polymodal/presets/<kind>/<name>.yaml``, each file a mapping ``{description: str, values: mapping}``
(the shape of open_clip's ``model_configs/*.json`` and timm's ``default_cfgs``). Kinds today:

- ``clip``: native CLIP architectures, the fields of ``CLIPNativeConfig`` (``clip_vision`` / ``clip_text``
  ``preset:`` option, ``CLIPNativeConfig.from_preset``);
- ``encoders``: modality specs (a ``model.modalities.<name>`` mapping: kind, encoder, options, processor) used
  by the demos.

The files live under the package (not under the repository's ``configs/``) so that a wheel install and an
editable install both find them through ``importlib.resources``; ``pyproject.toml``'s package-data ships them.
``polymodal list presets`` lists them. Files are read with the config files' YAML 1.2 rules
(``config.values.load_yaml``: ``1e-5`` is a number, ``off`` a word). This module imports nothing from the rest
of polymodal but ``errors`` and ``config.values``.
"""

from __future__ import annotations

import copy
import difflib
from functools import cache
from importlib import resources
from typing import Any

import yaml

from ..config.values import load_yaml
from ..errors import PolymodalError

SUFFIX = ".yaml"


class PresetError(PolymodalError, ValueError):
    """An unknown preset kind or name, or a preset file that is not ``{description, values}``."""


def _root():
    return resources.files(__name__)


def preset_kinds() -> list[str]:
    """The preset kinds: sub-folders of this package holding at least one ``*.yaml`` file."""
    return sorted(entry.name for entry in _root().iterdir()
                  if entry.is_dir() and any(item.name.endswith(SUFFIX) for item in entry.iterdir()))


def _kind_dir(kind: str):
    kinds = preset_kinds()
    if kind not in kinds:
        raise PresetError(f"unknown preset kind {kind!r}{_hint(kind, kinds)}; available: {', '.join(kinds)}")
    return _root().joinpath(kind)


def _hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def preset_names(kind: str) -> list[str]:
    """Sorted names of the presets of ``kind`` (file names without ``.yaml``). Raises PresetError for an
    unknown kind."""
    return sorted(item.name[: -len(SUFFIX)] for item in _kind_dir(kind).iterdir() if item.name.endswith(SUFFIX))


@cache
def _read(kind: str, name: str) -> tuple[str, dict[str, Any]]:
    names = preset_names(kind)
    if name not in names:
        raise PresetError(f"unknown {kind} preset {name!r}{_hint(name, names)}; available: {', '.join(names)} "
                          f"(`polymodal list presets`)")
    where = f"polymodal/presets/{kind}/{name}{SUFFIX}"
    try:
        data = load_yaml(_kind_dir(kind).joinpath(name + SUFFIX).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PresetError(f"{where}: not valid YAML ({err}); fix the file") from err
    if not isinstance(data, dict) or set(data) != {"description", "values"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise PresetError(f"{where}: a preset file holds exactly the keys 'description' and 'values', got {keys}")
    if not isinstance(data["description"], str) or not isinstance(data["values"], dict):
        raise PresetError(f"{where}: 'description' must be a string and 'values' a mapping")
    return data["description"], data["values"]


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """The ``values`` mapping of preset ``kind/name``: a fresh deep copy each call (callers may change it).

    Raises PresetError (a ValueError) naming the kind or name and listing the available ones, or naming the
    file when it is malformed.
    """
    return copy.deepcopy(_read(kind, name)[1])


def describe_presets() -> dict[str, dict[str, str]]:
    """``{kind: {name: description}}`` for every shipped preset (what ``polymodal list presets`` prints)."""
    return {kind: {name: _read(kind, name)[0] for name in preset_names(kind)} for kind in preset_kinds()}


__all__ = ["PresetError", "describe_presets", "load_preset", "preset_kinds", "preset_names"]
