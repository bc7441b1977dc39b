"""The report package renders report.json to the same Markdown, HTML and headline as the single-module
report.py it replaced (golden files rendered by that module, see golden/README.md)."""

import json
from pathlib import Path

import pytest

from polymodal.evaluation.report import headline_rows, interval_notes, render_markdown

GOLDEN = Path(__file__).with_name("golden")
NAMES = sorted(p.name[: -len(".report.json")] for p in GOLDEN.glob("*.report.json"))


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    import polymodal.evaluation.plots as plots

    monkeypatch.setattr(plots, "render_plots", lambda report: {})


def test_golden_cases_cover_both_kinds():
    assert NAMES == ["alignment", "bare_alignment", "classification"]


@pytest.mark.parametrize("name", NAMES)
def test_markdown_is_byte_identical(name):
    report = json.loads((GOLDEN / f"{name}.report.json").read_text())
    assert render_markdown(report) == (GOLDEN / f"{name}.md").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_html_is_byte_identical(name):
    from polymodal.evaluation.html import render_html

    report = json.loads((GOLDEN / f"{name}.report.json").read_text())
    assert render_html(report) == (GOLDEN / f"{name}.html").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_headline_and_notes_are_unchanged(name):
    report = json.loads((GOLDEN / f"{name}.report.json").read_text())
    expected = json.loads((GOLDEN / f"{name}.summary.json").read_text())
    assert json.loads(json.dumps(headline_rows(report))) == expected["headline_rows"]
    assert interval_notes(report) == expected["interval_notes"]


def test_golden_markdown_states_the_hand_added_branches():
    """The golden files exercise what the real runs did not: a degenerate CI, an unsupported class, a skip."""
    md = (GOLDEN / "classification.md").read_text()
    assert "- macro_f1: degenerate: zero width" in md
    assert "no true sample of class(es) 9" in md
    assert "- skipped audio_noise on audio: no raw audio rows" in md
    assert "evaluate_alignment failed: boom" in (GOLDEN / "bare_alignment.md").read_text()
