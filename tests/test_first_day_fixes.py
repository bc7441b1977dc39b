"""What a new user's first day found: stale comparisons, resumes of another model, finished runs, abbreviations."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import yaml

from polymodal.cli import build_parser
from polymodal.config import Config, ConfigError, config_to_dict, load_config, save_config
from polymodal.recipes.compare import _predictions_file
from polymodal.training.resume_checks import check_resume_config, config_differences, warn_if_finished
from polymodal.training.trackers import task_of


def _touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (mtime, mtime))


def test_compare_ignores_predictions_written_before_the_model_was_retrained(tmp_path):
    run = tmp_path / "run"
    _touch(run / "eval_test" / "predictions.json", 1_000)
    _touch(run / "best" / "model.safetensors", 2_000)  # retrained after the last eval
    assert _predictions_file(run, "test") is None
    assert _predictions_file(run / "best", "test") is None
    os.utime(run / "eval_test" / "predictions.json", (3_000, 3_000))  # evaluated again: current
    assert _predictions_file(run, "test") == run / "eval_test" / "predictions.json"
    explicit = run / "eval_test" / "predictions.json"
    assert _predictions_file(explicit, "test") == explicit  # a file the user names is always used


def test_config_differences_name_every_key():
    saved = {"fusion": {"name": "tensor", "dim": 64}, "head": {"labels": ["0", "1"]}}
    current = {"fusion": {"name": "transformer", "dim": 64}, "head": {"labels": ["0", "1"]}, "extra": 1}
    assert config_differences(saved, current, "model") == [
        "model.extra: None in the run, 1 now", "model.fusion.name: 'tensor' in the run, 'transformer' now"]
    assert config_differences(saved, json.loads(json.dumps(saved)), "model") == []


def test_resume_with_another_model_is_refused_naming_the_key(tmp_path):
    run_config = load_config(None, ["model.fusion.name=tensor"])
    save_config(run_config, tmp_path / "config.yaml")
    check_resume_config(tmp_path, load_config(None, ["model.fusion.name=tensor", "train.epochs=7"]))  # same model
    with pytest.raises(ConfigError, match=r"model\.fusion\.name: 'tensor' in the run, 'transformer' now"):
        check_resume_config(tmp_path, load_config(None, ["model.fusion.name=transformer"]))
    check_resume_config(tmp_path / "no_run", run_config)  # nothing saved: nothing to compare
    # the saved file round-trips to the same plain data (no false alarms from YAML types)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"] == config_to_dict(run_config)["model"]


def test_resuming_a_finished_run_says_it_cannot_extend_it(tmp_path):
    with pytest.warns(UserWarning, match="already finished .* cannot extend"):
        warn_if_finished({"finished": True, "epoch": 3, "global_step": 12}, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_finished({"finished": False}, tmp_path)


def test_options_are_never_abbreviated():
    parser = build_parser()
    with pytest.raises(SystemExit):  # `--backend` is not `--backend-option`
        parser.parse_args(["retrieve", "query", "index_dir", "--text", "seven", "--backend", "faiss"])
    assert parser.parse_args(["retrieve", "query", "index_dir", "--text", "seven", "--backend-option", "nprobe=8"])


def test_demo_tasks_write_to_their_own_folders(monkeypatch):
    from polymodal.cli import demo as demo_verb
    from polymodal.recipes.demos import align as align_demo
    from polymodal.recipes.demos import classify as demo

    seen = []
    monkeypatch.setattr(demo, "run_classification_demo", lambda out, **kw: seen.append(out))
    monkeypatch.setattr(align_demo, "run_alignment_demo", lambda out, **kw: seen.append(out))
    for argv in (["demo"], ["demo", "--quick"], ["demo", "--task", "align", "--quick"], ["demo", "--out", "mine"]):
        assert demo_verb.run(build_parser().parse_args(argv)) == 0
    assert seen == ["polymodal_out/demo/classify", "polymodal_out/demo/classify_quick",
                    "polymodal_out/demo/align_quick", "mine"]


def test_run_records_name_the_alignment_task():
    assert task_of(Config(task="alignment")) == "alignment"
    assert task_of(Config()) == "classification"
