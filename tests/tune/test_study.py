"""Studies on a tiny task where the learning rate decides: improvement over a bad first trial, test read once
and only at the end, resume after a finished and after an interrupted invocation, pruning, parallel trials,
and the errors a user can cause."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
from tune_fixtures import write_space, write_task

optuna = pytest.importorskip("optuna")

import polymodal.data.dataset as dataset_module  # noqa: E402
import polymodal.recipes.tune as study_module  # noqa: E402
from polymodal.cli import main  # noqa: E402
from polymodal.recipes.tune import TuneError, TuneOptions, run_study  # noqa: E402
from polymodal.training.interrupt import TrainingInterrupted  # noqa: E402
from polymodal.training.trackers import read_run_record  # noqa: E402

BAD_LR = {"train.lr": 1e-6}
GOOD_LR = {"train.lr": 2e-2}


def load(study_dir):
    return optuna.load_study(study_name="polymodal", storage=f"sqlite:///{study_dir / 'study.db'}")


@pytest.fixture
def task(tmp_path):
    return write_task(tmp_path), write_space(tmp_path)


@pytest.fixture
def guarded_test_split(monkeypatch):
    """The test manifest raises when read before the study's final evaluation; reads are counted."""
    state = {"allowed": False, "reads": 0}
    real_read, real_eval = dataset_module.read_manifest, study_module.evaluate_test

    def read_manifest(path, *args, **kwargs):
        if str(path).endswith("test.jsonl"):
            if not state["allowed"]:
                raise AssertionError(f"the test split was read before the end of the study: {path}")
            state["reads"] += 1
        return real_read(path, *args, **kwargs)

    def evaluate_test(*args, **kwargs):
        state["allowed"] = True
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "read_manifest", read_manifest)
    monkeypatch.setattr(study_module, "evaluate_test", evaluate_test)
    return state


def test_study_improves_on_a_bad_first_trial_and_reads_test_once(task, tmp_path, guarded_test_split):
    recipe, space = task
    summary = run_study(recipe, space, TuneOptions(trials=4, study_dir=tmp_path / "study", enqueue=[BAD_LR],
                                                   pruner="none", verbose=False))
    values = [row["value"] for row in summary["trials"]]
    assert summary["trials"][0]["params"] == BAD_LR and values[0] == pytest.approx(0.5)  # chance: 2 balanced classes
    assert summary["best"]["value"] >= values[0] + 0.3
    assert summary["best"]["value"] == max(values)
    assert guarded_test_split["reads"] == 1  # the test split: read once, after every trial
    assert summary["test"]["num_samples"] == 32 and summary["test"]["accuracy"] >= 0.8
    best_run = tmp_path / "study" / "trials" / f"trial_{summary['best']['number']:04d}"
    assert (best_run / "best" / "model.safetensors").is_file()
    assert not (best_run / "checkpoints").exists()  # resume state of a finished trial is dropped
    others = [r for r in summary["trials"] if r["number"] != summary["best"]["number"]]
    assert all(not (tmp_path / "study" / "trials" / f"trial_{r['number']:04d}" / "best").exists() for r in others)
    for name in ("report.md", "report.html", "study.json", "history.png", "test/report.md"):
        assert (tmp_path / "study" / name).is_file(), name
    assert (tmp_path / "study" / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "study" / "report.md").read_text()
    assert "## Trials" in report and "| 0 | complete | 0.5 | 1e-06 |" in report and "## Parameter importance" in report
    assert json.loads((tmp_path / "study" / "study.json").read_text())["best"]["number"] == summary["best"]["number"]
    assert read_run_record(best_run)["status"] == "finished"  # each trial is a tracked run


def test_cli_study_resumes_to_the_total(task, tmp_path, capsys, guarded_test_split):
    recipe, space = task
    argv = ["tune", str(recipe), "--space", str(space), "--study-dir", str(tmp_path / "study"), "--pruner", "none"]
    assert main([*argv, "--trials", "2"]) == 0
    assert len(load(tmp_path / "study").trials) == 2
    capsys.readouterr()
    assert main([*argv, "--trials", "4"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 trials finished" in printed and "test (evaluated once)" in printed
    study = load(tmp_path / "study")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert main([*argv, "--trials", "4"]) == 0  # nothing left to run: no new trial
    assert len(load(tmp_path / "study").trials) == 4


def test_interrupted_trial_resumes_its_checkpoint(task, tmp_path, monkeypatch):
    recipe, space = task
    from polymodal.training.trainer import Trainer

    real_end_epoch = Trainer._end_epoch

    def end_epoch(self):  # Ctrl-C during trial 1's first epoch: the Trainer saves and raises TrainingInterrupted
        real_end_epoch(self)
        if self.run_dir.name == "trial_0001" and self.state["epoch"] == 1 and not os.environ.get("_SENT"):
            os.environ["_SENT"] = "1"
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.delenv("_SENT", raising=False)
    monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
    options = TuneOptions(trials=3, study_dir=tmp_path / "study", enqueue=[GOOD_LR, GOOD_LR], pruner="none",
                          verbose=False)
    with pytest.raises(TrainingInterrupted):
        run_study(recipe, space, options)
    study = load(tmp_path / "study")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert study.trials[1].user_attrs["interrupted"] is True
    interrupted_dir = tmp_path / "study" / "trials" / "trial_0001"
    assert (interrupted_dir / "checkpoints" / "last").is_dir()
    assert read_run_record(interrupted_dir)["status"] == "interrupted"

    summary = run_study(recipe, space, options)
    study = load(tmp_path / "study")
    retry = study.trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == study.trials[1].params
    assert retry.user_attrs["run_dir"] == str(interrupted_dir)
    record = read_run_record(interrupted_dir)
    assert record["resumed"] == 1 and record["status"] == "finished"  # the Trainer's exact resume, not a restart
    assert summary["trials_finished"] == 3


def test_median_pruner_stops_a_bad_trial(task, tmp_path):
    recipe, space = task
    summary = run_study(recipe, space, TuneOptions(trials=3, study_dir=tmp_path / "study", pruner="median",
                                                   enqueue=[GOOD_LR, GOOD_LR, BAD_LR], evaluate_test=False,
                                                   verbose=False))
    states = [row["state"] for row in summary["trials"]]
    assert states == ["complete", "complete", "pruned"]
    pruned_run = tmp_path / "study" / "trials" / "trial_0002"
    assert read_run_record(pruned_run)["status"] == "pruned"
    assert summary["trials"][2]["epochs"] == 2  # stopped after the second epoch (no pruning on the first)
    assert summary["test"] is None


def test_parallel_trials(task, tmp_path):
    recipe, space = task
    summary = run_study(recipe, space, TuneOptions(trials=2, jobs=2, study_dir=tmp_path / "study", pruner="none",
                                                   evaluate_test=False, verbose=False))
    assert summary["trials_finished"] == 2
    assert {row["run_dir"] for row in summary["trials"]} == {
        str(tmp_path / "study" / "trials" / f"trial_{n:04d}") for n in (0, 1)}


def test_failed_combination_is_recorded_and_the_study_goes_on(task, tmp_path):
    recipe, _ = task
    space = write_space(tmp_path, "params:\n  model.fusion.name: {type: categorical, choices: [concat, nosuch]}\n")
    # "nosuch" passes the schema check (any string) and fails when the model is built: one failed trial.
    summary = run_study(recipe, space, TuneOptions(trials=2, study_dir=tmp_path / "study", pruner="none",
                                                   enqueue=[{"model.fusion.name": "nosuch"}],
                                                   evaluate_test=False, verbose=False))
    failed = [row for row in summary["trials"] if row["state"] == "fail"]
    assert failed and "nosuch" in failed[0]["note"]
    assert summary["trials_finished"] == 2


def test_user_errors(task, tmp_path, monkeypatch):
    recipe, space = task
    with pytest.raises(TuneError, match="optimises a validation metric"):
        run_study(recipe, space, TuneOptions(trials=1, study_dir=tmp_path / "s1", metric="test_accuracy"))
    run_study(recipe, space, TuneOptions(trials=1, study_dir=tmp_path / "s2", evaluate_test=False, verbose=False))
    with pytest.raises(TuneError, match="holds a study with metric 'val_accuracy'"):
        run_study(recipe, space, TuneOptions(trials=2, study_dir=tmp_path / "s2", metric="val_loss"))
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(recipe.read_text().replace(f"val: {tmp_path}/val.jsonl, ", ""))
    with pytest.raises(TuneError, match="needs a validation split"):
        run_study(no_val, space, TuneOptions(trials=1, study_dir=tmp_path / "s3"))
    monkeypatch.setitem(__import__("sys").modules, "optuna", None)
    with pytest.raises(TuneError, match=r"needs the 'optuna' package.*polymodal\[tune\]"):
        run_study(recipe, space, TuneOptions(trials=1, study_dir=tmp_path / "s4"))


def test_demo_task_tune_dispatches(tmp_path, monkeypatch):
    import polymodal.recipes.demos.tune as demo

    calls = []
    monkeypatch.setattr(demo, "run_tune_demo", lambda out, **kwargs: calls.append((out, kwargs)))
    assert main(["demo", "--task", "tune", "--quick", "--out", str(tmp_path), "--seed", "3"]) == 0
    assert calls == [(str(tmp_path), {"quick": True, "epochs": None, "seed": 3})]


def test_trial_left_running_by_a_killed_process_is_retried(task, tmp_path):
    recipe, space = task
    options = TuneOptions(trials=1, study_dir=tmp_path / "study", pruner="none", evaluate_test=False, verbose=False)
    run_study(recipe, space, options)
    stale = load(tmp_path / "study").ask()  # what a SIGKILLed process leaves: a RUNNING trial with its values
    stale.suggest_float("train.lr", 1e-6, 3e-2, log=True)
    stale.set_user_attr("run_dir", str(tmp_path / "study" / "trials" / "trial_0001"))
    run_study(recipe, space, dataclasses.replace(options, trials=2))
    study = load(tmp_path / "study")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[1].user_attrs["interrupted"] is True
    assert study.trials[2].params == study.trials[1].params and study.trials[2].user_attrs["retry_of"] == 1
