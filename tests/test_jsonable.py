"""The one JSON-sanitising helper used by metrics.json (classification and alignment runs) and report.json."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.jsonable import jsonable


@dataclasses.dataclass
class _Point:
    x: float
    where: Path


def test_plain_json_with_no_nan():
    value = {
        1: (np.float32(0.5), np.int64(3), np.bool_(True), True, None, "s"),
        "nan": [float("nan"), float("inf"), -math.inf, np.float64("nan"), np.float32("inf")],
        "tensor": torch.tensor([[1.0, float("nan")], [2.0, 3.0]]),
        "scalar": torch.tensor(2.5),
        "array": np.array([1, 2], dtype=np.int32),
        "farray": np.array([0.25, np.nan]),
        "path": Path("/a/b"),
        "point": _Point(x=float("inf"), where=Path("p")),
    }
    out = jsonable(value)
    assert out == {
        "1": [0.5, 3, True, True, None, "s"],
        "nan": [None, None, None, None, None],
        "tensor": [[1.0, None], [2.0, 3.0]],
        "scalar": 2.5,
        "array": [1, 2],
        "farray": [0.25, None],
        "path": "/a/b",
        "point": {"x": None, "where": "p"},
    }
    text = json.dumps(out, allow_nan=False)  # strict JSON: would raise on NaN
    assert json.loads(text) == out
    assert type(out["1"][1]) is int and type(out["1"][2]) is bool and type(out["1"][0]) is float


def test_finite_numbers_round_trip_exactly():
    values = [0.1, 1e-300, -2.5e300, np.float64(1 / 3)]
    assert json.loads(json.dumps(jsonable(values))) == [float(v) for v in values]
    assert jsonable(np.float32(0.1)) == pytest.approx(0.1) and jsonable(2**70) == 2**70


def test_every_writer_uses_the_same_helper():
    """The train recipe (metrics.json of every task) and the report call this one function."""
    from polymodal.evaluation.report import build, provenance
    from polymodal.evaluation.report.sections import alignment
    from polymodal.recipes import train

    for module in (train, build, provenance, alignment):
        assert vars(module)["jsonable"] is jsonable, module.__name__


def test_classification_metrics_json_is_strict_json_with_nan():
    """metrics.json of a classification run used to carry NaN (invalid JSON); it now carries null."""
    from polymodal.recipes import train

    summary = {"test": {"roc_auc": np.float64("nan"), "accuracy": np.float32(0.5)}}
    assert json.dumps(train.jsonable(summary), allow_nan=False) == '{"test": {"roc_auc": null, "accuracy": 0.5}}'
