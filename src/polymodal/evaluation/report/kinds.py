"""Report kinds: what each kind of model contributes to the report, found through one registry.

A kind (classification, alignment, generation) is one class in one file under ``sections/``,
registered with ``@REPORT_KINDS.register(name)``. It says which models it reports on (:meth:`ReportKind.matches`),
builds its sections from the model's outputs (:meth:`ReportKind.quality`, :meth:`ReportKind.robustness`) and
renders them (:meth:`ReportKind.markdown`, :meth:`ReportKind.html`, the headline table and its notes). The
dispatcher (``build.py``), the renderers (``markdown.py``, ``html.py``) and ``evaluate_path`` know no kind by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...registry import Registry
from .options import ReportOptions

# Reading the registry imports sections/, whose import registers every kind (see polymodal.registry).
REPORT_KINDS = Registry("report kind", package="polymodal.evaluation.report.sections")


@dataclass(frozen=True)
class SectionInput:
    """What a kind's section builders see: the evaluated model, its batches (collected once), the loader they
    came from (for raw rows), the options, the label names of ``meta.labels`` (may be empty) and the caller's
    ``context`` (``build_report``'s keyword arguments: model_dir, run_dir, split, ``config`` — the RunConfig
    evaluated — and ``run_config``, the run's saved config as a dict)."""

    model: Any
    batches: list
    loader: Any
    options: ReportOptions
    labels: list[str]
    context: dict[str, Any] = field(default_factory=dict)


class ReportKind:
    """Base class of a report kind. Subclasses set ``section`` and ``headline`` and override what they add.

    ``section``: the top-level report key holding the kind's headline metrics and their ``bootstrap`` block.
    ``headline``: metric names of ``section`` shown first in the headline table, in this order.
    ``priority``: when several kinds match a model, the highest priority wins (a more specific kind, e.g.
    captioning on a model without a classification head, outranks the general one).
    """

    name: ClassVar[str] = ""
    section: ClassVar[str] = ""
    headline: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0

    def matches(self, model: Any) -> bool:
        """True when this kind reports on ``model``: the report kind its task names (``Task.report_kind``)."""
        from ...tasks import UnknownTaskError, task_of

        try:
            return task_of(model).report_kind == self.name
        except UnknownTaskError:
            return False

    def quality(self, data: SectionInput) -> dict[str, Any]:
        """Top-level report keys this kind fills from the model's outputs (its ``section``, predictions ...)."""
        raise NotImplementedError

    def robustness(self, data: SectionInput) -> dict[str, Any] | None:
        """The ``robustness`` section (ablations, corruption curves), or None when the kind has none."""
        return None

    def efficiency(self, data: SectionInput) -> dict[str, Any] | None:
        """The ``efficiency`` section: parameters, FLOPs, latency, throughput, memory of one forward pass per batch
        (``evaluation.efficiency``). A kind whose models are not measured that way returns None (and reports its
        own measures in its section, e.g. generation: tokens/s and time to first token)."""
        from ..efficiency import measure_efficiency

        options = data.options
        return measure_efficiency(data.model, data.batches[0], options.efficiency_batch_sizes, options.warmup,
                                  options.repeats, options.device)

    def console(self, report: dict[str, Any]) -> list[str]:
        """Lines ``polymodal eval`` prints after the headline (beyond the shared efficiency / robustness lines)."""
        return []

    def interval_notes(self, report: dict[str, Any]) -> list[str]:
        """Sentences on how the headline CIs were made (shown under the headline table in md, html and CLI)."""
        return degenerate_notes(report.get(self.section) or {})

    def markdown(self, report: dict[str, Any]) -> list[str]:
        """Markdown lines shown after the headline table (the kind's detailed tables)."""
        return []

    def html(self, report: dict[str, Any]) -> list[str]:
        """HTML fragments shown after the headline table."""
        return []

    def metrics(self, report: dict[str, Any]) -> dict[str, Any] | None:
        """What ``polymodal eval`` writes as metrics.json, or None (no metrics.json)."""
        return None


def degenerate_notes(section: dict[str, Any]) -> list[str]:
    """One note per bootstrap interval of ``section`` flagged degenerate (e.g. zero width)."""
    intervals = (section.get("bootstrap") or {}).get("intervals") or {}
    return [f"{name}: {ci.get('note')}" for name, ci in intervals.items() if ci.get("degenerate")]


def _kinds() -> list[ReportKind]:
    return [REPORT_KINDS.get(name)() for name in REPORT_KINDS.names()]


def kind_for_model(model: Any) -> ReportKind:
    """The kind reporting on ``model``: the matching kind of highest priority (ties: first by name).

    Raises ValueError when no registered kind reports on this type of model.
    """
    matching = [kind for kind in _kinds() if kind.matches(model)]
    if not matching:
        raise ValueError(f"no report kind covers a {type(model).__name__}: registered kinds are "
                         f"{', '.join(REPORT_KINDS.names())} (add one under polymodal/evaluation/report/sections/)")
    return max(matching, key=lambda kind: kind.priority)  # max keeps the first of equal priorities


def kind_for_report(report: dict[str, Any]) -> ReportKind | None:
    """The kind that built ``report`` (its ``kind`` field; without one, the kind whose section is filled)."""
    kinds = _kinds()
    for kind in kinds:
        if kind.name == report.get("kind"):
            return kind
    for kind in kinds:
        if report.get(kind.section):
            return kind
    return None


__all__ = ["REPORT_KINDS", "ReportKind", "SectionInput", "degenerate_notes", "kind_for_model", "kind_for_report"]
