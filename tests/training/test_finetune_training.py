"""The finetune section end to end: config validation, CLI shorthand, the feature cache through pipeline.train
(hit / miss / stale, saved model still a full raw-input model), parameter accounting in metrics.json."""

from __future__ import annotations

import json

import pytest
import torch

from polymodal.cli import build_parser
from polymodal.config import Config, ConfigError, from_dict
from polymodal.models import MultimodalModel
from polymodal.pipeline import prepare, train
from polymodal.training.finetune import FinetuneConfig

IMAGE = {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
         "processor": {"image_size": 8, "channels": 1}}


def digits_config(run_dir, finetune=None, limit=24, epochs=2, image=None) -> Config:
    """Image-only spoken digits (8×8 scans): real data, a few seconds per run."""
    data = {
        "model": {"modalities": {"image": image or IMAGE}, "fusion": {"name": "concat", "dim": 8}},
        "data": {"name": "spoken-digits", "batch_size": 8, "limit": limit},
        "train": {"epochs": epochs, "lr": 1e-2, "progress": False, "log_every": 0, "out_dir": str(run_dir)},
    }
    if finetune is not None:
        data["finetune"] = finetune
    return from_dict(Config, data)


# ---------------------------------------------------------------------------------------------- config


def test_config_section_is_parsed_and_validated_with_key_names():
    config = digits_config("unused", {"default": "lora", "encoders": {"image": "frozen"}, "lora": {"r": 4}})
    assert isinstance(config.finetune, FinetuneConfig)
    assert config.finetune.lora.r == 4 and config.finetune.strategy_for("image") == "frozen"
    with pytest.raises(ConfigError, match=r"finetune\.default: 'lorra' is not one of \[.*'lora'"):
        digits_config("unused", {"default": "lorra"})
    with pytest.raises(ConfigError, match=r"unknown config key 'finetune\.lora\.rank'.*valid keys here: r, alpha"):
        digits_config("unused", {"lora": {"rank": 4}})
    with pytest.raises(ConfigError, match=r"finetune\.encoders\.audio: the model has no modality 'audio'.*image"):
        digits_config("unused", {"encoders": {"audio": "frozen"}})
    with pytest.raises(ConfigError, match=r"finetune\.lora\.r: must be >= 1"):
        digits_config("unused", {"lora": {"r": 0}})
    assert digits_config("unused", "linear_probe").finetune.default == "linear_probe"  # string shorthand
    assert digits_config("unused").finetune is None


def test_cli_finetune_flag_is_shorthand_for_the_default_strategy(tmp_path, monkeypatch):
    from polymodal.cli import train as train_verb

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {fusion: {name: concat}}\n")  # a classification recipe (no objectives)
    args = build_parser().parse_args(["train", str(recipe), "--finetune", "lora", "--set", "finetune.lora.r=2"])
    seen = {}

    class Stop(Exception):
        pass

    def fake_load_config(path, overrides):  # records what `polymodal train` asks for, then stops before training
        seen["overrides"] = overrides
        raise Stop

    monkeypatch.setattr(train_verb, "load_config", fake_load_config)
    with pytest.raises(Stop):
        train_verb.run(args)
    assert seen["overrides"] == ["finetune.lora.r=2", "finetune.default=lora"]


def test_bad_target_module_through_train_lists_valid_names(tmp_path):
    config = digits_config(tmp_path, {"default": "lora", "lora": {"target_modules": ["qkv"]}})
    with pytest.raises(ValueError, match=r"finetune\.lora\.target_modules: \['qkv'\] match no Linear/Conv.*Valid names: "):
        train(config, verbose=False)


# ---------------------------------------------------------------------------------------------- feature cache


@pytest.fixture(scope="module")
def prepared():
    return prepare(digits_config("unused"))


def _statuses(summary):
    return {split: {m: r["status"] for m, r in reports.items()} for split, reports in summary["feature_cache"]["splits"].items()}


def test_cache_miss_hit_stale_through_training_and_saved_model_is_full(tmp_path, prepared):
    cache = str(tmp_path / "cache")
    base = digits_config(tmp_path / "base", epochs=1)
    train(base, prepared=prepared, verbose=False)  # the "pretrained" encoder: a short full run
    frozen = {"default": "frozen", "cache_dir": cache, "init_from": str(tmp_path / "base")}

    first = train(digits_config(tmp_path / "a", frozen), prepared=prepared, verbose=False)
    assert _statuses(first) == {"train": {"image": "miss"}, "val": {"image": "miss"}}
    assert first["feature_cache"]["all_cached"]
    second = train(digits_config(tmp_path / "b", dict(frozen, default="linear_probe")), prepared=prepared,
                   verbose=False)
    assert _statuses(second) == {"train": {"image": "hit"}, "val": {"image": "hit"}}  # same encoder weights

    # Different encoder weights (no init_from: a fresh random encoder) → stale, rebuilt.
    third = train(digits_config(tmp_path / "c", {"default": "frozen", "cache_dir": cache}), prepared=prepared,
                  verbose=False)
    assert _statuses(third)["train"]["image"] == "stale"
    assert "encoder weights changed" in third["feature_cache"]["splits"]["train"]["image"]["reason"]
    assert len(list((tmp_path / "cache" / "train" / "image").iterdir())) == 1  # the old key was replaced
    assert list((tmp_path / "cache" / "train" / "image").glob("*/shard-*.safetensors"))

    # The best model is a normal full model: encoders included, predicts on raw inputs as the cached path did.
    best = MultimodalModel.from_pretrained(tmp_path / "a" / "best")
    pretrained = MultimodalModel.from_pretrained(tmp_path / "base" / "best")
    for key, value in pretrained.encoders.state_dict().items():
        assert torch.equal(best.encoders.state_dict()[key], value), key  # frozen: bit-identical to the init
    batch = next(iter(prepared[1]["test"]))
    with torch.no_grad():
        logits = best(batch).logits
    assert logits.shape == (len(batch), 10) and torch.isfinite(logits).all()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 24 and 0.0 <= metrics["test"]["accuracy"] <= 1.0


def test_cache_off_and_augmentation_skip_the_cache(tmp_path, prepared):
    off = train(digits_config(tmp_path / "off", {"default": "frozen", "cache_features": "off"}, epochs=1),
                prepared=prepared, verbose=False)
    assert off["feature_cache"] is None
    augmented = digits_config(tmp_path / "aug", {"default": "frozen", "cache_features": "on"}, epochs=1)
    augmented.data.augment = True
    with pytest.raises(ValueError, match=r"cache_features=on.*image: input augmentation is on"):
        train(augmented, prepared=prepared, verbose=False)


def test_cached_and_uncached_training_give_the_same_model(tmp_path, prepared):
    """Cached features are exact: same seed, same data order → the same trained head (within float tolerance)."""
    frozen = {"default": "frozen", "cache_dir": str(tmp_path / "cache")}
    cached = train(digits_config(tmp_path / "on", frozen), prepared=prepared, verbose=False)
    plain = train(digits_config(tmp_path / "off", dict(frozen, cache_features="off")), prepared=prepared,
                  verbose=False)
    assert cached["feature_cache"]["all_cached"] and plain["feature_cache"] is None
    a = MultimodalModel.from_pretrained(tmp_path / "on" / "best").state_dict()
    b = MultimodalModel.from_pretrained(tmp_path / "off" / "best").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- accounting


def test_parameter_accounting_in_metrics_json(tmp_path, prepared):
    train(digits_config(tmp_path / "lp", {"default": "linear_probe"}, epochs=1), prepared=prepared, verbose=False)
    metrics = json.loads((tmp_path / "lp" / "metrics.json").read_text())
    counts = metrics["finetune"]
    model = MultimodalModel.from_pretrained(tmp_path / "lp" / "best")
    head = sum(p.numel() for p in model.head.parameters())
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == head == metrics["parameters"]["trainable"]
    assert counts["trainable_share"] == pytest.approx(head / counts["total"])
    assert counts["components"]["encoder.image"] == {
        "strategy": "frozen", "total": counts["components"]["encoder.image"]["total"], "trainable": 0,
        "trainable_share": 0.0}
    # Without a finetune section the breakdown is still written.
    train(digits_config(tmp_path / "plain", epochs=1), prepared=prepared, verbose=False)
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())["finetune"]
    assert plain["trainable"] == plain["total"] and plain["components"]["encoder.image"]["strategy"] == "full"
