"""Trackers write what they claim: run.json (jsonl), TensorBoard events read back with tensorboard's own
EventAccumulator, MLflow calls (through a recording client), a clear error for a missing package, nothing
optional written unless chosen; and `polymodal runs` lists runs."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types

import pytest
import yaml
from run_fixtures import loaders, model, rows, train_config

from polymodal.cli import main
from polymodal.training import Trainer
from polymodal.training.run_index import format_runs, list_runs
from polymodal.training.trackers import (
    TrackerUnavailableError,
    config_hash,
    final_metrics,
    read_run_record,
    resolve_trackers,
    run_status,
)


def fit(run_dir, **overrides):
    train_loader, val_loader = loaders()
    cfg = train_config(epochs=2, **overrides)
    trainer = Trainer(model(), cfg, train_loader, val_loader=val_loader, run_dir=run_dir, config=cfg, verbose=False)
    return trainer, trainer.fit()


def test_jsonl_record_has_params_once_and_final_metrics(tmp_path):
    _, summary = fit(tmp_path / "run")
    record = read_run_record(tmp_path / "run")
    assert record["status"] == "finished" and record["resumed"] == 0
    assert record["params"]["lr"] == pytest.approx(5e-3) and record["params"]["epochs"] == 2
    assert record["final"]["best_val_loss"] == pytest.approx(summary["best_metric"])
    assert record["final"]["best_epoch"] == summary["best_epoch"]
    last_epoch = [r for r in rows(tmp_path / "run") if r["kind"] == "epoch"][-1]
    assert record["final"]["last_val_loss"] == pytest.approx(last_epoch["val_loss"])
    assert record["trackers"] == ["jsonl"]
    # The default is jsonl only: no TensorBoard directory just because the package happens to be installed.
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_interrupted_then_resumed_record(tmp_path):
    train_loader, val_loader = loaders()
    cfg = train_config(epochs=2)
    trainer = Trainer(model(), cfg, train_loader, val_loader=val_loader, run_dir=tmp_path, config=cfg, verbose=False)
    trainer.fit(stop_after_steps=3)
    assert read_run_record(tmp_path)["status"] == "stopped"
    trainer = Trainer(model(), cfg, train_loader, val_loader=val_loader, run_dir=tmp_path, config=cfg, verbose=False)
    trainer.fit(resume=True)
    record = read_run_record(tmp_path)
    assert record["status"] == "finished" and record["resumed"] == 1


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, summary = fit(tmp_path / "run", trackers=["tensorboard"])
    logdir = tmp_path / "run" / "tensorboard"
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    epochs = [r for r in rows(tmp_path / "run") if r["kind"] == "epoch"]
    val_loss = acc.Scalars("epoch/val_loss")
    assert [e.step for e in val_loss] == [r["step"] for r in epochs]
    assert [e.value for e in val_loss] == pytest.approx([r["val_loss"] for r in epochs], rel=1e-6)
    steps = [r for r in rows(tmp_path / "run") if r["kind"] == "step"]
    assert len(acc.Scalars("train_step/loss")) == len(steps) == 10
    assert acc.Scalars("final/best_val_loss")[0].value == pytest.approx(summary["best_metric"], rel=1e-6)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["lr"].number_value == pytest.approx(5e-3)
    assert start.session_start_info.hparams["status"].string_value == "finished"
    assert read_run_record(tmp_path / "run")["trackers"] == ["jsonl", "tensorboard"]


def test_missing_tracker_package_is_named_before_training(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(TrackerUnavailableError) as err:
        fit(tmp_path / "run", trackers=["jsonl", "tensorboard"])
    message = str(err.value)
    assert "'tensorboard' package" in message and "polymodal[tracking]" in message and "train.trackers" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_unknown_tracker_is_a_config_error():
    from polymodal.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"train.trackers\[0\]: 'wandb' is not one of"):
        load_config(None, ["train.trackers=[wandb]"])
    assert resolve_trackers(["tensorboard", "jsonl"])[0] == "jsonl"  # jsonl always on, first


class RecordingClient:
    calls: list = []

    def __init__(self):
        self.calls = RecordingClient.calls

    def get_experiment_by_name(self, name):
        self.calls.append(("experiment", name))
        return None

    def create_experiment(self, name):
        return "7"

    def create_run(self, experiment_id, run_name=None, tags=None):
        self.calls.append(("create_run", experiment_id, run_name, tags))
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id="run-1"))

    def log_param(self, run_id, key, value):
        self.calls.append(("param", run_id, key, value))

    def log_metric(self, run_id, key, value, timestamp=None, step=None):
        self.calls.append(("metric", run_id, key, value, step))

    def set_tag(self, run_id, key, value):
        self.calls.append(("tag", run_id, key, value))

    def set_terminated(self, run_id, status=None):
        self.calls.append(("terminated", run_id, status))


@pytest.fixture
def fake_mlflow(monkeypatch):
    RecordingClient.calls = []
    package = types.ModuleType("mlflow")
    package.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    tracking = types.ModuleType("mlflow.tracking")
    tracking.MlflowClient = RecordingClient
    package.tracking = tracking
    monkeypatch.setitem(sys.modules, "mlflow", package)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", tracking)
    return RecordingClient.calls


def test_mlflow_tracker_logs_params_metrics_and_status(tmp_path, fake_mlflow):
    _, summary = fit(tmp_path / "run", trackers=["mlflow"])
    calls = fake_mlflow
    params = {c[2]: c[3] for c in calls if c[0] == "param"}
    assert params["lr"] == "0.005" and params["epochs"] == "2"
    val_loss = [(c[4], c[3]) for c in calls if c[0] == "metric" and c[2] == "val_loss"]
    epochs = [r for r in rows(tmp_path / "run") if r["kind"] == "epoch"]
    assert val_loss == [(r["step"], pytest.approx(r["val_loss"])) for r in epochs]
    final = {c[2]: c[3] for c in calls if c[0] == "metric" and c[2].startswith("final_")}
    assert final["final_best_val_loss"] == pytest.approx(summary["best_metric"])
    assert ("tag", "run-1", "polymodal.status", "finished") in calls
    assert calls[-1] == ("terminated", "run-1", "FINISHED")
    assert (tmp_path / "run" / "mlflow_run_id").read_text() == "run-1"


def test_run_status_and_final_metrics():
    class Pruned(Exception):
        tracker_status = "pruned"

    assert run_status(None, finished=True) == "finished"
    assert run_status(None, finished=False) == "stopped"
    assert run_status(Pruned(), finished=False) == "pruned"
    assert run_status(KeyboardInterrupt(), finished=False) == "interrupted"
    assert run_status(RuntimeError("x"), finished=False) == "failed"
    metrics = final_metrics({"monitor": "val_accuracy", "best_metric": 0.75, "best_epoch": 1, "epochs_run": 2,
                             "global_step": 8, "history": [{"val_accuracy": 0.7, "train_loss": 0.4, "lr": 1e-3}]})
    assert metrics == {"best_val_accuracy": 0.75, "best_epoch": 1, "epochs_run": 2, "global_step": 8,
                       "last_val_accuracy": 0.7, "last_train_loss": 0.4}


def test_config_hash_ignores_where_and_how_loudly():
    base = {"train": {"lr": 0.001, "out_dir": "a", "progress": True}, "model": {"fusion": {"name": "concat"}}}
    moved = {"train": {"lr": 0.001, "out_dir": "b", "progress": False}, "model": {"fusion": {"name": "concat"}}}
    changed = {"train": {"lr": 0.002, "out_dir": "a", "progress": True}, "model": {"fusion": {"name": "concat"}}}
    assert config_hash(base) == config_hash(moved) != config_hash(changed)
    assert len(config_hash(base)) == 12


def test_runs_lists_runs_and_legacy_runs(tmp_path, capsys):
    fit(tmp_path / "runs" / "a")
    fit(tmp_path / "runs" / "b", lr=1e-3)
    legacy = tmp_path / "runs" / "old"
    legacy.mkdir()
    (legacy / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.1}}))
    (legacy / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 0}) + "\n")
    (legacy / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.625}}))
    found = list_runs(tmp_path / "runs")
    assert sorted(r["run"] for r in found) == ["a", "b", "old"]
    by_name = {r["run"]: r for r in found}
    assert by_name["a"]["config_hash"] != by_name["b"]["config_hash"]
    assert by_name["a"]["metric"] == "val_loss" and by_name["a"]["epochs"] == 2
    assert by_name["a"]["value"] == pytest.approx(read_run_record(tmp_path / "runs" / "a")["final"]["best_val_loss"])
    assert by_name["old"]["test_accuracy"] == 0.625 and by_name["old"]["status"] == "unknown"
    assert "checkpoints" not in " ".join(r["run"] for r in found)  # a run's own sub-directories are not runs
    assert main(["runs", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:4] == ["run", "task", "config", "status"]
    assert by_name["b"]["config_hash"] in printed and "0.6250" in printed
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert format_runs([]).startswith("no runs found")
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
