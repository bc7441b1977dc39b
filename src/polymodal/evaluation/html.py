"""The HTML report page: kept importable here; the renderer lives in :mod:`polymodal.evaluation.report.html`."""

from __future__ import annotations

from .report.html import embed_png, page, render_html, table

__all__ = ["render_html", "table", "embed_png", "page"]
