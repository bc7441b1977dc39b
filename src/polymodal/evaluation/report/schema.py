"""The report's versioned layout: ``report_schema.json`` (JSON Schema draft 2020-12) and its validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")


def load_schema() -> dict[str, Any]:
    """The packaged report_schema.json as a dict."""
    return json.loads(SCHEMA_PATH.read_text())


def report_keys() -> list[str]:
    """The report's top-level keys in schema order: the order report.json is written in."""
    return list(load_schema()["properties"])


def validate_report(report: dict[str, Any]) -> None:
    """Raise ValueError naming the failing path when ``report`` does not match report_schema.json.

    Without ``jsonschema`` installed nothing is checked: validation is a development check, the report itself
    does not need it.
    """
    try:
        import jsonschema
    except ImportError:
        return
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(report))  # descends into oneOf branches
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "<root>"
        message = error.message if len(error.message) < 300 else error.message[:300] + "..."
        raise ValueError(f"report.json does not match its schema at {where}: {message}")


__all__ = ["SCHEMA_PATH", "SCHEMA_VERSION", "load_schema", "report_keys", "validate_report"]
