"""The one error type of the data layer."""

from __future__ import annotations

from ..errors import PolymodalError


class DataError(PolymodalError, ValueError):
    """Bad input data: a manifest, a row, a file or an array. The message names the file / row / column."""
