"""The one user-facing error of the explain tools."""

from __future__ import annotations

from ..errors import PolymodalError


class ExplainError(PolymodalError):
    """An explanation cannot be made as asked (unknown target label, alignment model, no usable input, ...).

    The message names the argument or modality at fault and says what to pass instead.
    """
