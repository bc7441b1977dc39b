"""Search spaces as data: parsing, errors that name the file and key, and the schema check before any trial."""

from __future__ import annotations

import pytest
from tune_fixtures import write_space, write_task

from polymodal.config import read_config_file
from polymodal.tune.space import SearchSpaceError, apply_params, load_space, parse_space, validate_space


def test_types_parse():
    space = parse_space({"metric": "val_macro_f1", "params": {
        "train.lr": {"type": "log_float", "low": 1e-4, "high": 1e-2},
        "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.05},
        "model.fusion.dim": {"type": "int", "low": 8, "high": 32, "step": 8},
        "finetune.lora.r": {"type": "int", "low": 2, "high": 16, "log": True},
        "model.fusion.name": {"type": "categorical", "choices": ["concat", "gated"]},
    }})
    by_key = {p.key: p for p in space.params}
    assert by_key["train.lr"].type == "float" and by_key["train.lr"].log
    assert by_key["model.fusion.dim"].step == 8 and by_key["finetune.lora.r"].log
    assert by_key["model.fusion.name"].choices == ["concat", "gated"]
    assert space.metric == "val_macro_f1" and space.direction is None
    assert not space.touches_data()
    assert parse_space({"params": {"data.batch_size": {"type": "int", "low": 8, "high": 16}}}).touches_data()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"train.lr": {"type": "uniform", "low": 0, "high": 1}}, "params.train.lr.type: 'uniform' is not one of"),
        ({"train.lr": {"type": "float", "low": 1.0}}, "params.train.lr: type float needs both low and high"),
        ({"train.lr": {"type": "float", "low": 2.0, "high": 1.0}}, "low 2.0 is above high 1.0"),
        ({"train.lr": {"type": "log_float", "low": 0.0, "high": 1.0}}, "a log scale needs low > 0"),
        ({"train.epochs": {"type": "int", "low": 1.5, "high": 3}}, "params.train.epochs.low: type int needs an integer"),
        ({"model.fusion.name": {"type": "categorical", "choices": []}}, "choices: give a non-empty list"),
        ({"train.lr": {"type": "float", "low": 0.1, "high": 1, "typo": 1}}, "unknown field(s) ['typo']"),
        ({"train.lr": [0.1, 0.2]}, "params.train.lr: expected a mapping"),
    ],
)
def test_malformed_spaces_name_file_and_key(params, message):
    with pytest.raises(SearchSpaceError) as err:
        parse_space({"params": params}, source="space.yaml")
    assert message in str(err.value) and str(err.value).startswith("space.yaml: ")


def test_top_level_errors(tmp_path):
    with pytest.raises(SearchSpaceError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SearchSpaceError, match="'params' must map config keys"):
        parse_space({"metric": "val_accuracy"})
    with pytest.raises(SearchSpaceError, match="direction 'up' must be maximize or minimize"):
        parse_space({"direction": "up", "params": {"train.lr": {"type": "float", "low": 0.1, "high": 1}}})
    with pytest.raises(SearchSpaceError, match=r"unknown top-level key\(s\) \['sampler'\]"):
        parse_space({"sampler": "tpe", "params": {}})


def test_keys_and_values_checked_against_the_config(tmp_path):
    recipe = write_task(tmp_path)
    base = read_config_file(recipe)
    typo = write_space(tmp_path, "params:\n  train.learning_rate: {type: float, low: 0.001, high: 0.01}\n")
    with pytest.raises(SearchSpaceError) as err:
        validate_space(load_space(typo), base)
    assert "params.train.learning_rate" in str(err.value) and str(typo) in str(err.value)
    out_of_range = write_space(tmp_path, "params:\n  train.warmup_ratio: {type: float, low: 0.0, high: 1.5}\n")
    with pytest.raises(SearchSpaceError, match=r"params.train.warmup_ratio = 1.5 does not fit the config"):
        validate_space(load_space(out_of_range), base)
    fine = write_space(tmp_path, "params:\n  model.fusion.name: {type: categorical, choices: [concat, gated]}\n")
    validate_space(load_space(fine), base)


def test_apply_params_sets_nested_keys_without_touching_the_base():
    base = {"train": {"lr": 0.1}}
    out = apply_params(base, {"train.lr": 0.2, "finetune.lora.r": 4})
    assert out == {"train": {"lr": 0.2}, "finetune": {"lora": {"r": 4}}}
    assert base == {"train": {"lr": 0.1}}
    with pytest.raises(SearchSpaceError, match="'lr' is not a section"):
        apply_params(base, {"train.lr.x": 1})
