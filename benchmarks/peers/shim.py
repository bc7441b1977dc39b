"""Let torchvision 0.28.0 (hence open_clip) import on the CPU build of torch 2.13.

torchvision's PyPI wheel is built against the CUDA build of torch; against the CPU build its compiled ops
(``torchvision/_C.so``) do not load, so the ``torchvision::*`` operators are never defined. torchvision then
still registers fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally at
import (``torchvision/_meta_registrations.py``), and registering a fake kernel for an undefined operator
raises. Defining just those two schemas with ``torch.library`` first lets the import finish; the models that
open_clip builds never call either operator (they are detection ops), and calling one would raise
"no kernel registered", never return a wrong result.

Usage, before anything imports torchvision or open_clip::

    import shim; shim.install()
    import open_clip
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# The schemas exactly as torchvision's C++ registers them (torchvision/csrc/ops/nms.cpp, quantized/qnms).
SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it would undefine the operators


def _has_schema(name: str) -> bool:
    try:
        torch._C._get_schema(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def compiled_ops_load() -> bool | None:
    """Whether torchvision's compiled ops load into this torch; None when torchvision is not installed.

    Loads ``torchvision/_C*.so`` the way torchvision itself does (``torch.ops.load_library``); loading it a
    second time later, from torchvision's own import, is a no-op.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    libraries = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so"))
    if not libraries:
        return False
    try:
        torch.ops.load_library(str(libraries[0]))
    except OSError:  # e.g. undefined symbols: built against another build of torch
        return False
    return True


def install() -> list[str]:
    """Define the missing ``torchvision::nms`` / ``qnms`` schemas; return the names defined here.

    Idempotent. A no-op when torchvision is not installed, or when its compiled ops load (they define the
    operators themselves, and a schema defined here first would make their registration fail).
    """
    global _LIBRARY
    missing = [name for name in SCHEMAS if not _has_schema(name)]
    if not missing or compiled_ops_load() is not False:
        return []
    missing = [name for name in missing if not _has_schema(name)]
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _LIBRARY.define(SCHEMAS[name])
    return missing
