"""Report kinds: each kind of model contributes its sections through REPORT_KINDS; the dispatcher, renderers and
`polymodal eval` know no kind by name, so a new kind is one class in one file."""

import json
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from torch import nn

from polymodal.config import AlignmentConfig, ModelConfig, from_dict
from polymodal.evaluation.report import (
    REPORT_KINDS,
    SCHEMA_PATH,
    ReportKind,
    ReportOptions,
    build_report,
    headline_rows,
    interval_notes,
    kind_for_model,
    kind_for_report,
    render_markdown,
)
from polymodal.evaluation.report.kinds import SectionInput
from polymodal.models import AlignmentModel, MultimodalModel
from polymodal.types import Batch

TINY = {"image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4]},
                  "processor": {"image_size": 8, "channels": 1}}}
OFF = ReportOptions(bootstrap=0, efficiency=False, robustness=False)


def _batches(n=6, labels=True):
    gen = torch.Generator().manual_seed(0)
    return [Batch(inputs={"image": {"pixel_values": torch.randn(n, 1, 8, 8, generator=gen)}},
                  present={"image": torch.ones(n, dtype=torch.bool)},
                  labels=(torch.arange(n) % 3) if labels else None, ids=[f"s{i}" for i in range(n)])]


def _classifier():
    torch.manual_seed(0)
    return MultimodalModel(from_dict(ModelConfig, {"modalities": TINY, "fusion": {"name": "concat", "dim": 8},
                                                   "head": {"labels": ["a", "b", "c"]}}))


def _aligner():
    torch.manual_seed(0)
    return AlignmentModel(from_dict(AlignmentConfig, {"modalities": {**TINY, "image2": TINY["image"]},
                                                      "embed_dim": 8}))


def test_registry_holds_the_kinds_and_dispatches_on_the_model():
    assert REPORT_KINDS.names() == ["alignment", "classification", "generation"]
    assert kind_for_model(_classifier()).name == "classification"
    assert kind_for_model(_aligner()).name == "alignment"
    for name in REPORT_KINDS.names():
        kind = REPORT_KINDS.get(name)()
        assert kind.name == name and kind.section in json.loads(SCHEMA_PATH.read_text())["properties"]


def test_kind_of_a_written_report_falls_back_to_the_filled_section():
    assert kind_for_report({"kind": "alignment"}).name == "alignment"
    assert kind_for_report({"quality": {"accuracy": 1.0}}).name == "classification"
    assert kind_for_report({"retrieval": {"mean_R@1": 0.5}}).name == "alignment"
    assert kind_for_report({}) is None
    assert headline_rows({}) == [] and interval_notes({}) == []


def test_classification_report_keeps_the_schema_order_and_its_numbers():
    model = _classifier()
    report = build_report(model, _batches(), OFF)
    assert list(report) == list(json.loads(SCHEMA_PATH.read_text())["properties"])
    assert report["kind"] == "classification" and report["retrieval"] is None
    probs = torch.tensor(report["predictions"]["probs"])
    with torch.no_grad():
        expected = model(_batches()[0]).logits.softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert report["quality"]["accuracy"] == pytest.approx(float((expected.argmax(1) == torch.arange(6) % 3)
                                                                .float().mean()))


def test_unlabelled_classification_data_is_refused():
    with pytest.raises(ValueError, match="no labels"):
        build_report(_classifier(), _batches(labels=False), OFF)


def test_no_matching_kind_names_the_model_type(monkeypatch):
    monkeypatch.setattr(REPORT_KINDS, "_entries", {})
    with pytest.raises(ValueError, match="no report kind covers a MultimodalModel"):
        kind_for_model(_classifier())


class _Echo(nn.Module):
    """A model without a classification head (like a captioner): the alignment kind would also claim it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.config = None


class _EchoReport(ReportKind):
    name = "echo"
    section = "retrieval"  # a real new kind adds its own key (and kind name) to report_schema.json
    headline = ("mean_R@1",)
    priority = 10  # more specific than the alignment kind, which matches every model without a head

    def matches(self, model):
        return isinstance(model, _Echo)

    def quality(self, data: SectionInput):
        n = sum(len(b) for b in data.batches)
        return {"retrieval": {"mean_R@1": 0.25, "num": n,
                              "bootstrap": {"n_resamples": 7, "intervals": {"mean_R@1": {
                                  "point": 0.25, "low": 0.1, "high": 0.4, "degenerate": True, "note": "tiny"}}}}}

    def interval_notes(self, report):
        return ["echo CI"] + super().interval_notes(report)

    def markdown(self, report):
        return ["### Echo", "", f"{report['retrieval']['num']} samples echoed.", ""]


def test_a_new_kind_is_one_registered_class(monkeypatch):
    """Registering a kind is all it takes: build, headline, notes and Markdown use it, nothing else changes."""
    monkeypatch.setitem(REPORT_KINDS._entries, "echo", _EchoReport)
    monkeypatch.setitem(REPORT_KINDS._descriptions, "echo", "test kind")
    model = _Echo()
    assert kind_for_model(model).name == "echo"  # priority beats the alignment kind's "no head" match
    assert kind_for_model(_aligner()).name == "alignment"
    report = build_report(model, _batches(), OFF)
    assert report["kind"] == "echo" and report["retrieval"]["num"] == 6 and report["quality"] is None
    assert headline_rows(report) == [["mean_R@1", 0.25, 0.1, 0.4]]
    assert interval_notes(report) == ["echo CI", "mean_R@1: tiny"]
    md = render_markdown(report)
    assert "# polymodal evaluation report (echo)" in md and "6 samples echoed." in md
    assert "| mean_R@1 | 0.2500 | 0.1000 | 0.4000 |" in md


def test_schema_is_package_data():
    """report_schema.json lives in the report package and pyproject ships it."""
    import polymodal

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(polymodal.__file__).parent
    relative = SCHEMA_PATH.relative_to(root).as_posix()
    assert SCHEMA_PATH.is_file() and relative == "evaluation/report/report_schema.json"
    pyproject = Path(__file__).parents[3] / "pyproject.toml"
    globs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["polymodal"]
    assert any(fnmatch(relative, g) for g in globs), globs


def test_html_and_report_import_without_a_cycle():
    """evaluation.html is imported first in a fresh interpreter (it used to import report, which imported it)."""
    code = ("import polymodal.evaluation.html as h, polymodal.evaluation.report as r; "
            "assert h.render_html is r.html.render_html; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
