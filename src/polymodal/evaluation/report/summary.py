"""The headline of a report (metric, value, CI) and the notes on its intervals: shared by the Markdown and
HTML renderers and the ``polymodal eval`` printout, so all three state the same numbers."""

from __future__ import annotations

from typing import Any

from .kinds import kind_for_report


def headline_section(report: dict[str, Any]) -> dict[str, Any]:
    """The section holding the headline metrics and their ``bootstrap`` block ({} when there is none)."""
    kind = kind_for_report(report)
    return (report.get(kind.section) or {}) if kind is not None else {}


def headline_rows(report: dict[str, Any]) -> list[list[Any]]:
    """[metric, value, CI low, CI high] for the report's headline metrics: the kind's ``headline`` names
    first (found in its section, or in the section's ``metrics`` mapping), then every other bootstrapped
    interval (value = the interval's point estimate)."""
    kind = kind_for_report(report)
    if kind is None:
        return []
    section = report.get(kind.section) or {}
    intervals = (section.get("bootstrap") or {}).get("intervals", {})
    rows = []
    values = section.get("metrics") if isinstance(section.get("metrics"), dict) else {}  # a kind's flat metrics
    for name in kind.headline:
        ci = intervals.get(name) or {}
        if name in section:
            rows.append([name, section.get(name), ci.get("low"), ci.get("high")])
        elif name in values:
            rows.append([name, values[name], ci.get("low"), ci.get("high")])
    for name, ci in intervals.items():
        if name not in kind.headline:
            rows.append([name, ci.get("point"), ci.get("low"), ci.get("high")])
    return rows


def interval_notes(report: dict[str, Any]) -> list[str]:
    """Sentences that say how the CIs were made and where one is not a real interval (md and html share them)."""
    kind = kind_for_report(report)
    return kind.interval_notes(report) if kind is not None else []


__all__ = ["headline_rows", "headline_section", "interval_notes"]
