import json

import pytest

from polymodal.config import Config, ConfigError, config_to_dict, from_dict, load_config, save_config


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_round_trip_and_overrides(tmp_path):
    path = write(
        tmp_path,
        """
model:
  modalities:
    image: {kind: image, encoder: image_cnn}
    audio: {kind: audio, options: {channels: 16}}
  fusion: {name: gated, dim: 64}
  head: {labels: ["a", "b"]}
data: {name: spoken-digits, batch_size: 16}
train: {epochs: 2}
""",
    )
    cfg = load_config(path, ["train.epochs=5", "train.lr=0.01", "model.fusion.options.layers=2"])
    assert cfg.train.epochs == 5 and cfg.train.lr == pytest.approx(0.01)
    assert cfg.model.modalities["audio"].options == {"channels": 16}
    assert cfg.model.fusion.options == {"layers": 2}
    assert cfg.model.modalities["image"].kind == "image"
    out = tmp_path / "again.json"
    save_config(cfg, out)
    again = load_config(out)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert json.loads(out.read_text())["data"]["batch_size"] == 16


def test_int_is_accepted_for_float_but_not_a_word_for_int():
    cfg = from_dict(Config, {"train": {"lr": 1}})
    assert isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer, got 'three'"):
        from_dict(Config, {"train": {"epochs": "three"}})
    # yes/no/on/off are YAML 1.1 booleans: they stay valid for true/false fields (tests/test_config_values.py)
    assert from_dict(Config, {"train": {"progress": "yes"}}).train.progress is True
    with pytest.raises(ConfigError, match=r"train\.progress: expected true/false"):
        from_dict(Config, {"train": {"progress": "maybe"}})


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError) as err:
        from_dict(Config, {"train": {"epoch": 3}})
    assert "unknown config key 'train.epoch'" in str(err.value)
    assert "did you mean 'train.epochs'" in str(err.value)


def test_unknown_nested_key_in_modality():
    with pytest.raises(ConfigError, match=r"model\.modalities\.image\.frezee"):
        from_dict(Config, {"model": {"modalities": {"image": {"kind": "image", "frezee": True}}}})


def test_literal_and_missing_required():
    with pytest.raises(ConfigError, match=r"model\.modalities\.x\.kind: 'video' is not one of"):
        from_dict(Config, {"model": {"modalities": {"x": {"kind": "video"}}}})
    with pytest.raises(ConfigError, match=r"missing config key 'model\.modalities\.x\.kind'"):
        from_dict(Config, {"model": {"modalities": {"x": {}}}})


def test_bad_override_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="must look like"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path, "train: [1, 2", "bad.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'"):
        load_config(None, ["trian.epochs=3"])
