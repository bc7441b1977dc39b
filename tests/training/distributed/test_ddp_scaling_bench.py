"""benchmarks/ddp_scaling.py --quick runs both workloads on 1 and 2 gloo processes and reports positive rates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "ddp_scaling.py"


@pytest.mark.slow
def test_quick_scaling_run_measures_every_workload_and_world_size(tmp_path):
    out = tmp_path / "scaling.md"
    for attempt in range(3):
        done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        # The rare C++ abort of a spawned gloo rank inside long pytest sessions (see ddp_helpers.spawn; not yet
        # explained) is retried like there; any other failure fails at once.
        if done.returncode == 0 or "terminate called without an active exception" not in done.stderr or attempt == 2:
            break
        warnings.warn("a rank of benchmarks/ddp_scaling.py aborted (SIGABRT); retrying", stacklevel=1)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(row["workload"], row["processes"]) for row in rows] == [("demo", 1), ("demo", 2), ("clip", 1), ("clip", 2)]
    assert all(row["samples_per_s"] > 0 and row["backend"] == "gloo" for row in rows)
    assert "| clip | 2 | gloo | 4 | 2 × 1 |" in out.read_text()
