"""Built-in data sets (registered in ``polymodal.registry.DATASETS``) and their export to manifests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...config import ModalityConfig
from ...registry import DATASETS
from ..manifest import SampleRow, records_to_rows
from .export import export_dataset
from .spoken_digits import SpokenDigits


def get_dataset(name: str) -> Any:
    """The built-in data set object registered under ``name`` (e.g. "spoken-digits")."""
    return DATASETS.get(name)()


def load_builtin_rows(name: str, split: str, modalities: Mapping[str, ModalityConfig]) -> list[SampleRow] | None:
    """Rows of one split mapped onto the configured modality names (``column`` or the name picks the field).

    Returns None when the data set has no such split.
    """
    dataset = get_dataset(name)
    if split not in dataset.splits:
        return None
    records = dataset.records(split)
    columns = list(records[0]) if records else []
    return records_to_rows(records, columns, modalities, source=f"{name}/{split}")


def describe_dataset(name: str) -> dict[str, Any]:
    return get_dataset(name).describe()


__all__ = ["SpokenDigits", "get_dataset", "load_builtin_rows", "describe_dataset", "export_dataset"]
