"""`polymodal train` fails cleanly and never loses or mixes results: a busy run directory, a diverged run, a full
disk (real file-size limit), Ctrl-C with --resume, torchrun and progress: false — each one line, no traceback."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polymodal.cli import main

CONFIG = """
model:
  modalities:
    text: {kind: text, encoder: text_transformer, options: {dim: 16, depth: 1}}
  fusion: {name: concat, dim: 16}
  head: {task: multiclass, dropout: 0.0}
data: {train: train.jsonl, val: val.jsonl, batch_size: 8}
train: {epochs: 2, lr: 0.002, seed: 0, progress: false, log_every: 1, out_dir: run}
"""


def write_run(root: Path, train_rows: int = 48, val_rows: int = 16) -> Path:
    rng = random.Random(0)
    words = "red blue green cat dog sat on mat the a big small".split()
    for split, n in (("train", train_rows), ("val", val_rows)):
        with open(root / f"{split}.jsonl", "w") as handle:
            for i in range(n):
                text = " ".join(rng.choice(words) for _ in range(6)) + f" class{i % 3}"
                handle.write(json.dumps({"id": f"{split}{i}", "text": text, "label": f"c{i % 3}"}) + "\n")
    (root / "cfg.yaml").write_text(CONFIG)
    return root / "cfg.yaml"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POLYMODAL_DEBUG", raising=False)
    return tmp_path


def one_line_error(err: str, *needles: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POLYMODAL_DEBUG", "WORLD_SIZE", "RANK")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_busy_run_directory_is_refused_and_left_alone(in_tmp, capsys):
    config = write_run(in_tmp)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom polymodal.training.run_lock import RunLock\n"
         "RunLock('run').acquire()\nprint('held', flush=True)\ntime.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=in_tmp, env=cli_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", str(config)]) == 2
        one_line_error(capsys.readouterr().err, "polymodal train: error: run directory run is in use by pid "
                       f"{holder.pid}, started ")
        assert [p.name for p in (in_tmp / "run").iterdir()] == [".polymodal.lock"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    capsys.readouterr()
    assert main(["train", str(config)]) == 0  # the killed holder's lock is stale: taken over, with a note
    assert f"took over the lock of a run that ended without releasing it (pid {holder.pid}" in capsys.readouterr().err
    rows = [json.loads(line) for line in (in_tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [0, 1]
    assert not (in_tmp / "run" / ".polymodal.lock").exists()  # released at exit


def test_diverged_run_is_one_line_and_predict_refuses(in_tmp, capsys):
    config = write_run(in_tmp)
    assert main(["train", str(config), "--set", "train.lr=1000000.0", "--set", "train.epochs=3"]) == 2
    one_line_error(capsys.readouterr().err, "polymodal train: error: training diverged: ", "epoch ",
                   "optimizer step ", "samples train")
    assert main(["predict", "run", "--text", "red cat class1", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    one_line_error(captured.err, "polymodal predict: error: ")


def test_progress_false_prints_epoch_summaries(in_tmp, capsys):
    config = write_run(in_tmp)
    assert main(["train", str(config), "--set", "train.progress=false"]) == 0
    out = capsys.readouterr().out
    assert [line.split("  ")[0] for line in out.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]


def test_world_size_without_torchrun_rendezvous_is_refused(in_tmp, capsys, monkeypatch):
    """WORLD_SIZE=2 set by hand (no MASTER_ADDR / MASTER_PORT / LOCAL_RANK): one line, nothing written. Real
    multi-process training under torchrun: tests/training/distributed/."""
    config = write_run(in_tmp)
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(config)]) == 2
    one_line_error(capsys.readouterr().err, "WORLD_SIZE=2 but LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set",
                   "torchrun --nproc_per_node=N -m polymodal train CONFIG")
    assert not (in_tmp / "run").exists()


def test_file_size_limit_is_one_line_naming_the_limit(in_tmp):
    config = write_run(in_tmp)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "polymodal.cli", "train", str(config)], cwd=in_tmp, env=cli_env(),
                          capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert done.returncode == 2, done.stderr
    one_line_error(done.stderr, "polymodal train: error: could not write ", "a file-size limit was hit",
                   "raise the limit")
    assert not list((in_tmp / "run").rglob(".last.tmp-*"))


@pytest.mark.slow
def test_ctrl_c_then_resume_end_to_end(in_tmp):
    """As in a terminal: SIGINT to the process group once a step of epoch 2 is logged; exit 130, one line with the
    resume command; `--resume` finishes with each epoch logged once and the earlier rows untouched."""
    config = write_run(in_tmp, train_rows=400)
    proc = subprocess.Popen([sys.executable, "-m", "polymodal.cli", "train", str(config), "--set", "train.epochs=3"],
                            cwd=in_tmp, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = in_tmp / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        if any(r["kind"] == "step" and r["epoch"] == 1 for r in rows):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    final = err.strip().splitlines()[-1]
    assert final.startswith("polymodal train: error: training interrupted by SIGINT at epoch 2 (")
    assert final.endswith(f"continue with: polymodal train {config} --set train.epochs=3 --resume")
    before = [line for line in metrics.read_text().splitlines() if '"kind": "epoch"' in line]
    resumed = subprocess.run([sys.executable, "-m", "polymodal.cli", "train", str(config), "--set", "train.epochs=3",
                              "--resume"], cwd=in_tmp, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = [line for line in metrics.read_text().splitlines() if '"kind": "epoch"' in line]
    assert [json.loads(line)["epoch"] for line in after] == [0, 1, 2] and after[: len(before)] == before
