"""Config values as users write them: exponent numbers, on/off words, and range checks naming the key."""

from __future__ import annotations

import json
import math

import pytest

from polymodal.config import (
    Config,
    ConfigError,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    save_config,
)

TINY = """
model:
  modalities:
    image: {kind: image, encoder: image_cnn, processor: {image_size: 16, channels: 1, max_pixels: 1e6}}
    text: {kind: text, options: {dim: 3.2e1, depth: 1}}
  fusion: {name: concat, dim: 32}
data: {train: train.jsonl, batch_size: 8}
train: {epochs: 1, lr: 5e-5, weight_decay: 1E-2, max_steps: 1e3, progress: off}
finetune: {default: full, cache_features: off}
"""


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- YAML 1.2 scalars


@pytest.mark.parametrize("text", ["5e-5", "1E-3", "1e6", "-2.5e+3", "0.5", "42", "-7", "0", "true", "false",
                                  "3.0", "1e-300"])
def test_numbers_and_booleans_match_json(text):
    # JSON is a subset of YAML 1.2: every JSON scalar must load to the same value (Python's json as reference).
    assert load_yaml(text) == json.loads(text)
    assert type(load_yaml(text)) is type(json.loads(text))


@pytest.mark.parametrize("text, expected", [
    ("off", "off"), ("On", "On"), ("OFF", "OFF"), ("yes", "yes"), ("no", "no"), ("y", "y"), ("n", "n"),
    ("True", True), ("FALSE", False), ("010", 10), ("0o17", 15), ("0x1f", 31), ("1_000", 1000),
    ("2024-01-01", "2024-01-01"), ("1:20", "1:20"), ("~", None), ("null", None), (".inf", math.inf),
    (".5e1", 5.0), ("5e", "5e"), ("e5", "e5"), ("1.2.3", "1.2.3"),
])
def test_yaml_12_core_schema(text, expected):
    assert load_yaml(f"v: {text}") == {"v": expected}


def test_overrides_parse_like_the_file():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 0.001)
    assert parse_override("finetune.cache_features=off") == (["finetune", "cache_features"], "off")
    assert parse_override("model.fusion.options.layers=[1, 2e1]") == (["model", "fusion", "options", "layers"], [1, 20.0])
    for bad in ("=3", "train..lr=1", "train.lr=[1"):
        with pytest.raises(ConfigError, match="override"):
            parse_override(bad)


# ---------------------------------------------------------------------------------------------- typed fields


def test_exponent_numbers_everywhere(tmp_path):
    cfg = load_config(write(tmp_path, TINY), ["train.encoder_lr=1E-4"])
    assert cfg.train.lr == 5e-5 and cfg.train.weight_decay == 0.01 and cfg.train.encoder_lr == 1e-4
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)  # 1e3 steps is an integer
    assert cfg.model.modalities["text"].options["dim"] == 32.0  # free-form options: a number, not '3.2e1'
    from polymodal.data import build_processor

    assert build_processor(cfg.model.modalities["image"], "image").config.max_pixels == 1_000_000
    # JSON strings that are clean numbers, and the saved YAML reads back the same
    cfg = from_dict(Config, json.loads('{"train": {"lr": "5e-5", "epochs": "3", "max_steps": "1e2"}}'))
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.max_steps) == (5e-5, 3, 100)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").train.lr == 5e-5
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer, got 2\.5"):
        from_dict(Config, {"train": {"epochs": 2.5}})


@pytest.mark.parametrize("written", ["off", "OFF", "Off", "no", "false", "n"])
def test_off_reaches_the_on_off_choice(tmp_path, written):
    cfg = load_config(write(tmp_path, TINY.replace("cache_features: off", f"cache_features: {written}")))
    assert cfg.finetune.cache_features == "off"
    assert cfg.train.progress is False


@pytest.mark.parametrize("value, expected", [(False, "off"), (True, "on"), ("on", "on"), ("yes", "on"),
                                             ("auto", "auto"), ("AUTO", "auto")])
def test_booleans_map_back_to_the_documented_word(value, expected):
    # a boolean comes from JSON or from a YAML 1.1 reader (yaml.safe_load) of the same file
    cfg = from_dict(Config, {"model": {"modalities": {"image": {"kind": "image"}}},
                             "finetune": {"cache_features": value}})
    assert cfg.finetune.cache_features == expected


def test_on_off_in_overrides_and_bool_fields(tmp_path):
    cfg = load_config(write(tmp_path, TINY), ["finetune.cache_features=on", "train.deterministic=no",
                                              "data.augment=yes"])
    assert cfg.finetune.cache_features == "on" and cfg.train.deterministic is False and cfg.data.augment is True
    with pytest.raises(ConfigError, match=r"finetune\.cache_features: 'sometimes' is not one of"):
        load_config(write(tmp_path, TINY), ["finetune.cache_features=sometimes"])


def test_alignment_config_reads_the_same_way(tmp_path):
    path = write(tmp_path, """
model:
  modalities: {image: {kind: image}, text: {kind: text}}
  embed_dim: 3.2e1
  objectives: [{name: clip, weight: 5e-1}]
data: {name: spoken-digits}
train: {lr: 2e-3}
eval: {retrieval_metric: off}
zeroshot: {classnames: [a, b], templates: {image: ["a {}"]}}
""")
    cfg = load_config(path, ["task=alignment", "train.weight_decay=1e-4"])
    assert cfg.model.embed_dim == 32 and cfg.model.objectives[0].weight == 0.5
    assert cfg.train.lr == 2e-3 and cfg.train.weight_decay == 1e-4 and cfg.eval.retrieval_metric is False
    assert cfg.eval.class_names == ["a", "b"] and cfg.eval.templates == {"image": ["a {}"]}  # zeroshot → eval
    with pytest.raises(ConfigError, match=r"zeroshot\.classnames and eval\.class_names disagree"):
        load_config(path, ["task=alignment", "eval.class_names=[c, d]"])
    for override, key in (("model.embed_dim=0", "embed_dim"), ("eval.ks=[1, 0]", r"eval\.ks\[1\]"),
                          ("train.lr=-1e-3", r"train\.lr")):
        with pytest.raises(ConfigError, match=key):
            load_config(path, ["task=alignment", override])


# ---------------------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("override, message", [
    ("train.lr=0", r"train\.lr: must be > 0, got 0\.0"),
    ("train.lr=-1e-3", r"train\.lr: must be > 0"),
    ("train.lr=.nan", r"train\.lr: expected a finite number"),
    ("train.lr=.inf", r"train\.lr: expected a finite number"),
    ("train.encoder_lr=0", r"train\.encoder_lr: must be > 0"),
    ("train.weight_decay=-5", r"train\.weight_decay: must be >= 0, got -5\.0"),
    ("train.warmup_ratio=1", r"train\.warmup_ratio: must be in \[0, 1\), got 1\.0"),
    ("train.warmup_ratio=-0.1", r"train\.warmup_ratio: must be in \[0, 1\)"),
    ("train.modality_dropout=1.5", r"train\.modality_dropout: must be in \[0, 1\)"),
    ("model.head.dropout=1", r"model\.head\.dropout: must be in \[0, 1\)"),
    ("model.head.hidden=-1", r"model\.head\.hidden: must be >= 0"),
    ("model.fusion.dim=0", r"model\.fusion\.dim: must be >= 1"),
    ("data.batch_size=0", r"data\.batch_size: must be >= 1"),
    ("data.eval_batch_size=-1", r"data\.eval_batch_size: must be >= 1"),
    ("data.num_workers=-1", r"data\.num_workers: must be >= 0"),
    ("data.limit=0", r"data\.limit: must be >= 1"),
    ("train.epochs=0", r"train\.epochs: must be >= 1"),
    ("train.max_steps=0", r"train\.max_steps: must be >= 1"),
    ("train.grad_accum=0", r"train\.grad_accum: must be >= 1"),
    ("train.seed=-1", r"train\.seed: must be >= 0"),
    ("train.early_stopping_patience=-1", r"train\.early_stopping_patience: must be >= 0 \(0 = off\)"),
    ("train.log_every=-1", r"train\.log_every: must be >= 0"),
    ("train.clip_grad_norm=-1", r"train\.clip_grad_norm: must be >= 0"),
    ("finetune.lora.r=0", r"finetune\.lora\.r: must be >= 1"),
    ("finetune.lora.dropout=1", r"finetune\.lora\.dropout: must be in \[0, 1\)"),
    ("finetune.lora.alpha=0", r"finetune\.lora\.alpha: must be > 0"),
    ("finetune.prompt.num_tokens=0", r"finetune\.prompt\.num_tokens: must be >= 1"),
    ("finetune.prompt.init_std=-1", r"finetune\.prompt\.init_std: must be >= 0"),
])
def test_out_of_range_values_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, TINY), [override])


def test_boundary_values_are_accepted(tmp_path):
    cfg = load_config(write(tmp_path, TINY), [
        "train.weight_decay=0", "train.warmup_ratio=0", "train.clip_grad_norm=0", "train.early_stopping_patience=0",
        "train.log_every=0", "model.head.dropout=0", "model.head.hidden=0", "data.num_workers=0", "train.seed=0",
        "train.clip_grad_norm=null", "train.modality_dropout=0.99", "finetune.lora.dropout=0",
    ])
    assert cfg.train.clip_grad_norm is None and cfg.train.weight_decay == 0.0 and cfg.train.modality_dropout == 0.99


def test_bad_config_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("train: {out_dir: caf\xe9}".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(tmp_path / "latin1.yaml")


@pytest.mark.parametrize("kind, options, message", [
    ("image", {"image_size": 0}, r"processor\.image_size: must be >= 1"),
    ("image", {"max_pixels": "-1e3"}, r"processor\.max_pixels: must be >= 1"),
    ("image", {"std": [0.5]}, None),
    ("image", {"std": [0.0]}, r"processor\.std\[0\]: must be > 0"),
    ("image", {"translate": 1.0}, r"processor\.translate: must be in \[0, 1\)"),
    ("audio", {"max_seconds": 0}, r"processor\.max_seconds: must be > 0"),
    ("audio", {"max_seconds": None, "hop_length": 1e2}, None),
    ("audio", {"hop_length": 0}, r"processor\.hop_length: must be >= 1"),
    ("audio", {"gain_db": -3}, r"processor\.gain_db: must be >= 0"),
])
def test_processor_ranges_name_the_key(kind, options, message):
    from polymodal.config import ModalityConfig
    from polymodal.data import build_processor

    options = dict(options, channels=1) if kind == "image" and "std" in options else options
    if message is None:
        build_processor(ModalityConfig(kind=kind, processor=options), "x")
        return
    with pytest.raises(ConfigError, match=rf"model\.modalities\.x\.{message}"):
        build_processor(ModalityConfig(kind=kind, processor=options), "x")
