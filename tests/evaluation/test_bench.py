"""`polymodal bench`: suite parsing and errors, mean ± std aggregation, and a tiny grid end to end."""

import csv
import statistics

import pytest
import yaml

from polymodal.cli import main
from polymodal.recipes.bench import COLUMNS, SuiteError, aggregate, cell_config, load_suite

TINY_SUITE = {
    "name": "tiny",
    "base": {
        "model": {
            "modalities": {
                "image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
                          "processor": {"image_size": 8, "channels": 1}},
                "audio": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [4, 8]},
                          "processor": {"max_seconds": 0.5, "n_mels": 16}},
            },
            "fusion": {"dim": 8},
        },
        "data": {"name": "spoken-digits", "limit": 24, "batch_size": 12, "eval_batch_size": 24},
        "train": {"epochs": 1, "lr": 0.01, "log_every": 1},
    },
    "grid": {"fusion": ["concat", "sum", "gated"], "encoders": {"cnn": {}, "wide": {"image": {"options": {"channels": [8]}}}},
             "finetune": ["full", "linear_probe"], "seeds": [0, 1, 2]},
    "quick": {"grid": {"fusion": ["concat", "sum"], "encoders": ["cnn"], "finetune": ["full"], "seeds": [0, 1]},
              "train": {"epochs": 1}},
    "efficiency": {"batch_sizes": [1, 4], "warmup": 1, "repeats": 2},
}


def _write(tmp_path, suite, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(suite))
    return path


def test_quick_picks_the_reduced_grid_and_cells_build_configs(tmp_path):
    path = _write(tmp_path, TINY_SUITE)
    full, quick = load_suite(path), load_suite(path, quick=True)
    assert len(full["grid"]["fusion"]) * len(full["grid"]["encoders"]) * 2 * 3 == 36
    assert quick["grid"]["fusion"] == ["concat", "sum"] and list(quick["grid"]["encoders"]) == ["cnn"]
    config = cell_config(full, "gated", "wide", "linear_probe", 2, tmp_path / "run")
    assert config.model.fusion.name == "gated" and config.train.seed == 2
    assert config.model.modalities["image"].options == {"channels": [8]}
    assert config.model.modalities["audio"].options == {"channels": [4, 8]}  # untouched by the "wide" set
    assert config.finetune.default == "linear_probe" and config.train.out_dir == str(tmp_path / "run")
    builtin = load_suite("spoken-digits", quick=True)  # the packaged suite parses and its cells are valid configs
    for fusion in builtin["grid"]["fusion"]:
        cell_config(builtin, fusion, next(iter(builtin["grid"]["encoders"])), "full", 0, tmp_path / "b")


def test_suite_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(SuiteError, match="unknown key.*'gird'"):
        load_suite(_write(tmp_path, {**TINY_SUITE, "gird": {}}))
    with pytest.raises(SuiteError, match="grid.seeds must be a non-empty list"):
        load_suite(_write(tmp_path, {**TINY_SUITE, "grid": {**TINY_SUITE["grid"], "seeds": []}}))
    with pytest.raises(SuiteError, match="quick.grid.encoders names \\['vit'\\]"):
        load_suite(_write(tmp_path, {**TINY_SUITE, "quick": {"grid": {"encoders": ["vit"]}}}), quick=True)
    bad_modality = {**TINY_SUITE, "grid": {**TINY_SUITE["grid"], "encoders": {"x": {"text": {"encoder": "hf"}}}}}
    suite = load_suite(_write(tmp_path, bad_modality))
    with pytest.raises(SuiteError, match="grid.encoders.x.text"):
        cell_config(suite, "concat", "x", "full", 0, tmp_path)
    suite = load_suite(_write(tmp_path, TINY_SUITE))
    with pytest.raises(SuiteError, match="suite.yaml, cell fusion=concat.*finetune"):
        cell_config(suite, "concat", "cnn", "not_a_strategy", 0, tmp_path)
    with pytest.raises(FileNotFoundError, match="built-in suites: spoken-digits"):
        load_suite(tmp_path / "absent.yaml")


def test_aggregate_mean_std_over_seeds_and_ranking():
    runs = [{"fusion": f, "encoders": "cnn", "finetune": "full", "seed": s, "accuracy": acc, "macro_f1": acc / 2,
             "params_total": 10, "params_trainable": 10, "train_seconds": 1.0}
            for f, accs in (("concat", [0.5, 0.7, 0.6]), ("gated", [0.8, 0.9, 0.85])) for s, acc in enumerate(accs)]
    board = aggregate(runs, {("gated", "cnn", "full"): {"flops_per_sample": 123, "latency_ms": {"p50": 1.5}}})
    assert [r["fusion"] for r in board] == ["gated", "concat"] and [r["rank"] for r in board] == [1, 2]
    assert board[1]["accuracy_mean"] == pytest.approx(0.6)
    assert board[1]["accuracy_std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.6]))
    assert board[0]["flops_per_sample"] == 123 and board[1]["flops_per_sample"] is None
    assert list(board[0]) == COLUMNS


def test_bench_quick_end_to_end(tmp_path, capsys):
    path = _write(tmp_path, TINY_SUITE)
    assert main(["bench", str(path), "--quick", "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert {r["fusion"] for r in rows} == {"concat", "sum"} and all(r["seeds"] == "2" for r in rows)
    for row in rows:
        assert 0 <= float(row["accuracy_mean"]) <= 1 and float(row["accuracy_std"]) >= 0
        assert int(row["flops_per_sample"]) > 0 and float(row["latency_p50_ms"]) > 0
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 4
    # mean over the two seeds in the leaderboard equals the per-run accuracies
    for row in rows:
        accs = [float(r["accuracy"]) for r in runs if r["fusion"] == row["fusion"]]
        assert float(row["accuracy_mean"]) == pytest.approx(statistics.fmean(accs), abs=1e-5)
    md = (out / "leaderboard.md").read_text()
    assert "| # | fusion |" in md and " ± " in md and "--quick" in md
    html = (out / "leaderboard.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert "leaderboard" in capsys.readouterr().out
