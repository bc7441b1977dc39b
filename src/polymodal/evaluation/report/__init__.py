"""One evaluation report for a saved model on a data split: quality, efficiency, robustness, provenance.

    report = build_report(model, loader, options=ReportOptions(bootstrap=1000))   # a JSON-ready dict
    paths = write_report(report, "eval_out")   # report.json (validated), report.md, report.html

``polymodal.recipes.evaluate.evaluate_path`` does the whole job for ``polymodal eval``: load a model or run directory, rebuild the
split it was trained on (or read a manifest), build the report and write it with ``metrics.json`` (the
classification report) and ``predictions.json`` (per-sample probabilities, for ``eval --compare``).

The report layout is versioned (``schema_version``) and described by ``report_schema.json`` in this package;
:func:`validate_report` checks a report against it. Non-finite numbers are written as null (strict JSON has no
NaN).

Layout: ``build`` (dispatch) · ``kinds`` (the REPORT_KINDS registry) · ``sections/`` (one file per kind of model:
classification, alignment, generation; shared robustness and training sections) · ``provenance`` · ``schema`` ·
``summary`` (headline + CI notes) · ``markdown`` · ``html`` · ``loading`` (model + config rebuild) ·
``evaluate`` (write_report). A new kind of model adds its sections in one new file under
``sections/`` (a :class:`ReportKind` registered with ``@REPORT_KINDS.register(name)``).
"""

from __future__ import annotations

from .build import build_report
from .evaluate import write_report
from .kinds import REPORT_KINDS, ReportKind, SectionInput, kind_for_model, kind_for_report
from .loading import eval_config_for, is_alignment, load_any_model
from .markdown import render_markdown
from .options import CORRUPTIONS_BY_KIND, ReportOptions
from .provenance import config_hash, data_fingerprint
from .schema import SCHEMA_PATH, SCHEMA_VERSION, load_schema, validate_report
from .sections.alignment import RANK_BINS, alignment_quality, rank_histogram
from .sections.classification import classification_quality
from .sections.robustness import alignment_robustness, classification_robustness
from .sections.training import training_curves
from .summary import headline_rows, interval_notes

__all__ = [
    "CORRUPTIONS_BY_KIND",
    "RANK_BINS",
    "REPORT_KINDS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "ReportKind",
    "ReportOptions",
    "SectionInput",
    "alignment_quality",
    "alignment_robustness",
    "build_report",
    "classification_quality",
    "classification_robustness",
    "config_hash",
    "data_fingerprint",
    "eval_config_for",
    "headline_rows",
    "interval_notes",
    "is_alignment",
    "kind_for_model",
    "kind_for_report",
    "load_any_model",
    "load_schema",
    "rank_histogram",
    "render_markdown",
    "training_curves",
    "validate_report",
    "write_report",
]
