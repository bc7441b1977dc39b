"""Write a built report: report.json / .md / .html (+ predictions.json), validated against the schema.
The whole ``polymodal eval`` workflow is ``recipes.evaluate.evaluate_path``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import render_html
from .markdown import render_markdown
from .schema import validate_report


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Validate and write report.json, report.md, report.html and predictions.json (when present).

    report.json holds a pointer ``{"file": "predictions.json", "num_samples": N}`` instead of the per-sample
    predictions. Returns {"json", "md", "html"[, "predictions"]} → path. Raises ValueError (naming the failing
    path) when the report does not match report_schema.json.
    """
    from ...files import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    validate_report(report)
    predictions = report.get("predictions")
    slim = {**report, "predictions": None if predictions is None else {"file": "predictions.json",
                                                                       "num_samples": len(predictions["ids"])}}
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write_text(paths["json"], json.dumps(slim, indent=2, allow_nan=False))
    atomic_write_text(paths["md"], render_markdown(slim))
    atomic_write_text(paths["html"], render_html(slim))
    if predictions is not None:
        paths["predictions"] = out_dir / "predictions.json"
        atomic_write_text(paths["predictions"], json.dumps(predictions, allow_nan=False))
    return paths


__all__ = ["write_report"]
