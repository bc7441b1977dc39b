"""One JSON-sanitising helper for every file polymodal writes (metrics.json, report.json, results.json).

Strict JSON (``json.dumps(..., allow_nan=False)``, RFC 8259) has no NaN or infinity, and ``json`` does not know
numpy / torch scalars, arrays, paths or dataclasses; :func:`jsonable` turns all of them into plain JSON types.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (dict / list / str / int / float / bool / None), recursively.

    - dict keys → ``str``; tuples → lists; ``Path`` → ``str``; dataclass instances → dicts;
    - numpy arrays and torch tensors → (nested) lists; numpy / torch scalars → Python numbers;
    - non-finite floats (NaN, ±inf) → ``None`` (null), so the result always passes ``allow_nan=False``.

    Anything else (str, int, bool, None, an unknown object) is returned unchanged.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "item") and callable(value.item):  # other array-library scalars
        return jsonable(value.item())
    return value


__all__ = ["jsonable"]
