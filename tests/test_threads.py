"""The CPU thread policy (polymodal.threads, issue #17): OpenMP start-up variables are in the environment
before torch is imported by the CLI, values the user set are left alone, and the intra-op thread count
follows the model's size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from polymodal import threads

ROOT = Path(__file__).resolve().parents[1]
OPENMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               threads.POLICY_ENV)

# Run in a fresh interpreter: records os.environ at the moment torch is first imported (a meta-path hook
# sees the import before torch's libraries, hence OpenMP, load), then imports the console script's entry
# point and builds the parser, which imports torch (the `retrieve` verb's module).
PROBE = r"""
import json, os, sys
VARS = __VARS__
seen = {}

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "env" not in seen:
            seen["env"] = {k: os.environ.get(k) for k in VARS}
        return None

assert "torch" not in sys.modules
sys.meta_path.insert(0, Spy())
from polymodal.cli import main, build_parser  # what the `polymodal` console script imports
seen["torch_after_entry_import"] = "torch" in sys.modules
seen["env_after_entry_import"] = {k: os.environ.get(k) for k in VARS}
build_parser()
seen["torch_imported"] = "torch" in sys.modules
print(json.dumps(seen))
""".replace("__VARS__", repr(OPENMP_VARS))


def run_probe(**env_overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env |= env_overrides
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_sets_openmp_env_before_torch_is_imported():
    seen = run_probe()
    assert seen["torch_after_entry_import"] is False  # importing the entry point must not load torch
    assert seen["torch_imported"] is True  # ...but the CLI does load it, and by then the env was set:
    env = seen["env"]
    assert env["GOMP_SPINCOUNT"] == threads.GOMP_SPINCOUNT
    assert env["KMP_BLOCKTIME"] == threads.KMP_BLOCKTIME
    assert env[threads.POLICY_ENV] == "auto"
    assert env["OMP_WAIT_POLICY"] is None and env["OMP_NUM_THREADS"] is None  # not forced
    assert seen["env_after_entry_import"] == env


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        # the user chose the wait behaviour: no spin count added, their value kept
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None,
                                          "KMP_BLOCKTIME": None}),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}),
        # the user's spin settings win over ours; the other one still gets the default
        ({"GOMP_SPINCOUNT": "500"}, {"GOMP_SPINCOUNT": "500", "KMP_BLOCKTIME": threads.KMP_BLOCKTIME}),
        ({"KMP_BLOCKTIME": "50"}, {"KMP_BLOCKTIME": "50", "GOMP_SPINCOUNT": threads.GOMP_SPINCOUNT}),
        # a thread count set by the user is not touched (and not reset)
        ({"OMP_NUM_THREADS": "3"}, {"OMP_NUM_THREADS": "3", "GOMP_SPINCOUNT": threads.GOMP_SPINCOUNT}),
        # policy off: nothing set at all
        ({threads.POLICY_ENV: "off"}, {threads.POLICY_ENV: "off", "GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None}),
    ],
)
def test_cli_leaves_user_set_values_alone(user, expected):
    env = run_probe(**user)["env"]
    for key, value in expected.items():
        assert env[key] == value, key


def test_cli_module_imported_after_torch_leaves_the_process_alone():
    # a notebook / test session that uses torch and calls polymodal.cli.main is a library user
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env["PYTHONPATH"] = str(ROOT / "src")
    code = ("import os, torch, polymodal.cli; "
            f"print(sorted(k for k in {list(OPENMP_VARS)!r} if k in os.environ))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_configure_openmp_env_returns_only_what_it_set():
    environ = {"GOMP_SPINCOUNT": "7"}
    changed = threads.configure_openmp_env(environ)
    assert changed == {threads.POLICY_ENV: "auto", "KMP_BLOCKTIME": threads.KMP_BLOCKTIME}
    assert environ["GOMP_SPINCOUNT"] == "7"
    assert threads.configure_openmp_env(environ) == {}  # idempotent
    assert threads.configure_openmp_env({threads.POLICY_ENV: "OFF"}) == {}


def test_python_dash_m_runs_the_cli():
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run([sys.executable, "-m", "polymodal", "--help"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: polymodal" in done.stdout


def test_choose_num_threads_by_model_size():
    assert threads.choose_num_threads(200_000, 8) == 1  # the demo's models
    assert threads.choose_num_threads(threads.SMALL_MODEL_PARAMS - 1, 2) == 1
    assert threads.choose_num_threads(threads.SMALL_MODEL_PARAMS, 2) == 2
    assert threads.choose_num_threads(151_000_000, 4) == 4  # ViT-B/32 CLIP keeps every thread
    assert threads.choose_num_threads(151_000_000, 0) == 1


def test_choose_num_threads_by_the_work_of_a_step():
    # once a step's FLOPs are known they decide, not the parameter count
    assert threads.choose_num_threads(430_000, 2, step_flops=2.8e9) == 2  # the VQA demo's small conv net + LM
    assert threads.choose_num_threads(200_000, 2, step_flops=3.4e8) == 2  # a classification demo model
    assert threads.choose_num_threads(430_000, 2, step_flops=threads.SMALL_STEP_FLOPS - 1) == 1
    assert threads.choose_num_threads(151_000_000, 4, step_flops=1e7) == 1


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_torch_default_threads", None)
    yield
    torch.set_num_threads(before)


def test_apply_thread_policy_follows_model_size(restore_threads):
    auto = {threads.POLICY_ENV: "auto"}
    torch.set_num_threads(2)
    assert threads.apply_thread_policy(nn.Linear(64, 10), auto) == 1
    assert torch.get_num_threads() == 1
    # a large model afterwards gets torch's count back (recorded before the first change)
    big = nn.Linear(2304, 2304)  # 5.3 M parameters
    assert sum(p.numel() for p in big.parameters()) >= threads.SMALL_MODEL_PARAMS
    assert threads.apply_thread_policy(big, auto) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("environ", [{}, {threads.POLICY_ENV: "off"},
                                     {threads.POLICY_ENV: "auto", "OMP_NUM_THREADS": "2"},
                                     {threads.POLICY_ENV: "auto", "MKL_NUM_THREADS": "2"}])
def test_apply_thread_policy_is_a_no_op_unless_enabled_and_unset(restore_threads, environ):
    torch.set_num_threads(2)
    assert threads.apply_thread_policy(nn.Linear(4, 2), environ) is None
    assert torch.get_num_threads() == 2


def test_trainer_applies_the_policy(restore_threads, monkeypatch, tmp_path):
    from polymodal.training import Trainer

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "training"))  # its fixtures import each other by name
    fixtures = importlib.import_module("run_fixtures")
    monkeypatch.setenv(threads.POLICY_ENV, "auto")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    torch.set_num_threads(2)
    net = fixtures.model()
    assert sum(p.numel() for p in net.parameters()) < threads.SMALL_MODEL_PARAMS
    train, val = fixtures.loaders(train_size=16)
    seen = []
    real = threads.apply_thread_policy
    monkeypatch.setattr("polymodal.training.trainer.apply_thread_policy",
                        lambda model, environ=None, step_flops=None: seen.append(step_flops) or real(
                            model, environ, step_flops))
    Trainer(net, fixtures.train_config(epochs=1), train, val_loader=val, run_dir=tmp_path).fit()
    assert torch.get_num_threads() == 1
    # first by size, then once by the first step's forward FLOPs (counted: positive, and once only)
    assert len(seen) == 2 and seen[0] is None and 0 < seen[1] < threads.SMALL_STEP_FLOPS


# ---------------------------------------------------------------------------------- ThreadTuner (adaptive)


class FakeSteps:
    """Drives a ThreadTuner with step times that depend on the thread count set for each step (a fake clock)."""

    def __init__(self, seconds_per_step: dict[int, float]):
        self.seconds_per_step = dict(seconds_per_step)
        self.now = 0.0
        self.threads: list[int] = []  # the count in force at each set_threads call

    def clock(self) -> float:
        return self.now

    def set_threads(self, count: int) -> None:
        self.threads.append(count)

    def tuner(self, candidates=(2, 1), **options) -> threads.ThreadTuner:
        return threads.ThreadTuner(candidates, set_threads=self.set_threads, clock=self.clock, **options)

    def run(self, tuner: threads.ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            self.now += self.seconds_per_step[self.threads[-1]]
            tuner.step_done()


def test_tuner_keeps_the_work_based_count_on_a_quiet_machine():
    steps = FakeSteps({2: 0.010, 1: 0.0115})  # a second thread helps a little
    tuner = steps.tuner()
    steps.run(tuner, 1 + 2 * 6)  # warm-up + 2 rounds of 3 steps per candidate
    assert tuner.current == 2 and steps.threads[-1] == 2
    assert tuner.history[-1][2] == {2: pytest.approx(0.010), 1: pytest.approx(0.0115)}
    # the probe plan alternated the counts: 3 on the first, 3 on the other, twice
    assert steps.threads[:14] == [2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 1, 1, 1, 2]


def test_tuner_switches_to_one_thread_when_a_busy_machine_makes_it_faster():
    steps = FakeSteps({2: 0.030, 1: 0.012})  # barrier waits on a shared machine
    tuner = steps.tuner()
    steps.run(tuner, 13)
    assert tuner.current == 1 and steps.threads[-1] == 1
    # within the margin, the first (work-based) count stays
    steps = FakeSteps({2: 0.010, 1: 0.0095})
    tuner = steps.tuner(margin=0.1)
    steps.run(tuner, 13)
    assert tuner.current == 2


def test_tuner_rechecks_when_the_load_goes_away():
    steps = FakeSteps({2: 0.030, 1: 0.012})
    tuner = steps.tuner(reprobe_seconds=1.0)
    steps.run(tuner, 13)
    assert tuner.current == 1
    steps.seconds_per_step = {2: 0.008, 1: 0.012}  # the other processes finished
    steps.run(tuner, 200)  # > 1 s of steps: a re-probe of 3 + 3 steps
    assert tuner.current == 2 and len(tuner.history) >= 2
    assert tuner.history[-1][2][2] == pytest.approx(0.008)


def test_tuner_does_not_time_what_happens_between_epochs():
    steps = FakeSteps({2: 0.010, 1: 0.0115})
    tuner = steps.tuner()
    steps.run(tuner, 5)  # into the first probe block on one thread
    tuner.start()  # a new epoch: validation and a checkpoint took 30 s before the next step
    steps.now += 30.0
    steps.run(tuner, 8)
    assert tuner.current == 2 and max(tuner.history[-1][2].values()) < 1.0


def test_tuning_candidates_and_when_the_tuner_is_on(monkeypatch, restore_threads):
    assert threads.tuning_candidates(2, 2, 3e8) == (2, 1)
    assert threads.tuning_candidates(1, 4, 1e7) == (1, 4)
    assert threads.tuning_candidates(2, 2, 3e11) is None  # ViT-B/32: every thread, no one-thread probes
    assert threads.tuning_candidates(1, 1, 1e7) is None
    monkeypatch.setattr(threads, "_torch_default_threads", 2)
    monkeypatch.setenv(threads.POLICY_ENV, "auto")
    assert threads.tuner_for(2, 3e8) is None  # opt-in only
    monkeypatch.setenv(threads.POLICY_ENV, "adaptive")
    assert threads.policy_enabled() and isinstance(threads.tuner_for(2, 3e8), threads.ThreadTuner)
    assert threads.tuner_for(None, 3e8) is None  # the user fixed the count (apply_thread_policy returned None)
    with pytest.raises(ValueError, match="probe_steps and rounds"):
        threads.ThreadTuner((2, 1), probe_steps=0)


def test_trainer_times_steps_with_the_adaptive_policy(restore_threads, monkeypatch, tmp_path):
    from polymodal.training import Trainer

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "training"))
    fixtures = importlib.import_module("run_fixtures")
    monkeypatch.setenv(threads.POLICY_ENV, "adaptive")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    torch.set_num_threads(2)
    train, val = fixtures.loaders(train_size=64, batch_size=4)  # 16 steps
    trainer = Trainer(fixtures.model(), fixtures.train_config(epochs=1), train, val_loader=val, run_dir=tmp_path)
    trainer.fit()
    tuner = trainer._thread_tuner
    assert isinstance(tuner, threads.ThreadTuner) and tuner.candidates == (1, 2)
    assert trainer.state["global_step"] >= 13 and len(tuner.history) == 1  # the first decision was taken
    assert tuner.current in (1, 2) and torch.get_num_threads() == tuner.current


# ---------------------------------------------------------------------------------- benchmarks/contention.py


@pytest.fixture(scope="module")
def contention():
    path = ROOT / "benchmarks" / "contention.py"
    spec = importlib.util.spec_from_file_location("contention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_contention_policies_start_from_a_clean_environment(contention):
    base = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "1", "HOME": "/h"}
    assert contention.policy_env("default", base)["POLYMODAL_THREAD_POLICY"] == "off"
    assert "OMP_WAIT_POLICY" not in contention.policy_env("default", base)
    assert contention.policy_env("passive", base)["OMP_WAIT_POLICY"] == "PASSIVE"
    one = contention.policy_env("1thread+passive", base)
    assert (one["OMP_NUM_THREADS"], one["OMP_WAIT_POLICY"]) == ("1", "PASSIVE")
    new = contention.policy_env("polymodal", base)
    assert not any(var in new for var in contention.POLICY_VARS) and new["HOME"] == "/h"
    assert contention.policy_env("spin:2000", base)["GOMP_SPINCOUNT"] == "2000"
    with pytest.raises(SystemExit, match="unknown policy"):
        contention.policy_env("turbo", base)


def test_contention_load_stops_by_itself(contention):
    start = time.perf_counter()
    procs = contention.start_load(1, deadline_s=0.5)
    assert procs[0].wait(timeout=30) == 0  # exits on its own at the deadline, not killed
    assert time.perf_counter() - start < 30


def test_contention_markdown_reports_speed_up_and_quiet_cost(contention, tmp_path):
    args = type("Args", (), {"reps": 1, "load": 2})()
    cells = {
        "default": {"quiet": {"wall": [20.0], "cpu": [30.0]}, "busy": {"wall": [80.0], "cpu": [90.0]}},
        "polymodal": {"quiet": {"wall": [20.4], "cpu": [21.0]}, "busy": {"wall": [32.0], "cpu": [22.0]}},
    }
    meta = {"command": "python benchmarks/contention.py", "machine": "m", "torch": "t", "when": "now",
            "works": {"demo": "demo"}, "policies": ["default", "polymodal"], "cores": 2}
    out = tmp_path / "contention.md"
    text = contention.write_markdown(out, args, {"demo": cells}, meta)
    assert out.read_text().strip() == text.strip()
    row = next(line for line in text.splitlines() if line.startswith("| polymodal"))
    assert "2.50×" in row and "+2.0 %" in row  # 80 / 32; 20.4 / 20 − 1
    # CFS fair share: 2 threads next to 2 busy processes get half the CPU → ≥ 20 s × 4 / 2 = 40 s busy
    assert "≥ 40 s busy" in text and "at most **2.00×**" in text


# ---------------------------------------------------------------------------------- benchmarks/peers/shim.py


def test_peer_shim_is_a_no_op_without_torchvision():
    # a fresh interpreter: defining torchvision operators here would leak into the rest of the test session
    peers = str(ROOT / "benchmarks" / "peers")
    code = f"import sys; sys.path.insert(0, {peers!r}); import shim; print(shim.compiled_ops_load(), shim.install())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if importlib.util.find_spec("torchvision") is None:
        assert done.stdout.split() == ["None", "[]"]


def test_peer_shim_defines_the_two_schemas_torchvision_needs():
    # as on the CPU build of torch with torchvision 0.28.0: its compiled ops do not load
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "benchmarks" / "peers")!r})
import torch
import shim
shim.compiled_ops_load = lambda: False
print(shim.install(), shim.install())
# what torchvision/_meta_registrations.py does at import, which raised before the shim
for name in ("nms", "qnms"):
    torch.library.register_fake("torchvision::" + name)(lambda dets, scores, iou_threshold: dets.new_empty(0))
print(torch.ops.torchvision.nms.default._schema)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, schema = done.stdout.strip().splitlines()
    assert first == "['nms', 'qnms'] []"
    assert schema == "torchvision::nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
