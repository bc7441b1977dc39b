"""Data layer: processors (raw input → tensors), manifests, datasets / loaders, built-in data sets.

Typical use::

    from polymodal.data import build_processors, build_dataloaders
    processors = build_processors(config.model.modalities)
    loaders, labels = build_dataloaders(config, processors)
"""

from .builtin import SpokenDigits, describe_dataset, export_dataset, get_dataset, load_builtin_rows
from .dataset import MultimodalDataset, build_dataloaders, encode_label, load_split_rows
from .errors import DataError
from .manifest import SampleRow, collect_labels, read_manifest, read_records, records_to_rows, validate_rows
from .processors import Processor, build_processor, build_processors, pad_stack

__all__ = [
    "DataError",
    "Processor",
    "build_processor",
    "build_processors",
    "pad_stack",
    "SampleRow",
    "read_records",
    "read_manifest",
    "records_to_rows",
    "validate_rows",
    "collect_labels",
    "MultimodalDataset",
    "build_dataloaders",
    "load_split_rows",
    "encode_label",
    "SpokenDigits",
    "get_dataset",
    "load_builtin_rows",
    "describe_dataset",
    "export_dataset",
]
