"""Build the report: provenance, then each kind's sections, efficiency and training curves, in one JSON-ready
dict whose top-level keys follow report_schema.json. The dispatcher knows no kind by name (see kinds.py)."""

from __future__ import annotations

from typing import Any

from ...jsonable import jsonable
from .kinds import SectionInput, kind_for_model
from .options import ReportOptions
from .provenance import build_meta
from .schema import SCHEMA_VERSION, report_keys
from .sections.training import training_curves


def _collect(loader: Any) -> list:
    batches = list(loader)
    if not batches:
        raise ValueError("the evaluation data is empty (the loader yielded no batches)")
    return batches


def build_report(model: Any, loader: Any, options: ReportOptions | None = None, **context: Any) -> dict[str, Any]:
    """Everything about ``model`` on ``loader`` (an iterable of Batch) as one JSON-ready dict (see
    report_schema.json); non-finite numbers become null.

    ``context``: model_dir, run_dir, split, data_source, train_seed, labels (for provenance and training
    curves), config / run_config (the RunConfig evaluated and the run's saved config, for kinds that need them). The model's report kind (``kinds.kind_for_model``) fills the quality sections and robustness:
    classification models by accuracy, alignment models by retrieval R@1. Raises ValueError for empty data
    (and, for classification, unlabelled data).
    """
    options = options or ReportOptions()
    model = model.to(options.device).eval()
    batches = _collect(loader)
    kind = kind_for_model(model)
    report: dict[str, Any] = dict.fromkeys(report_keys())  # every section present, null unless filled
    report.update(schema_version=SCHEMA_VERSION, kind=kind.name, meta=build_meta(model, batches, options, context),
                  training=training_curves(context.get("run_dir")))
    data = SectionInput(model=model, batches=batches, loader=loader, options=options, labels=report["meta"]["labels"],
                        context=context)
    report.update(kind.quality(data))
    if options.efficiency:
        report["efficiency"] = kind.efficiency(data)
    if options.robustness:
        report["robustness"] = kind.robustness(data)
    return jsonable(report)


__all__ = ["build_report"]
