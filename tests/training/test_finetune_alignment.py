"""Fine-tuning strategies and the feature cache on the alignment task (issue #10 item 4).

- LoRA on the text tower of a CLIP model converted from Hugging Face (a tiny random ``CLIPModel`` saved to a temp
  dir, loaded by ``clip_vision`` / ``clip_text``), trained through ``recipes.train.train``: only LoRA weights move
  in the towers, the frozen image tower stays bit-identical, merged == unmerged, save → load → same embeddings.
- LoRA / LoHa / IA3 / prompt / linear probe on an aligner's towers: what trains, save / load, adapter-only saves.
- The feature cache for a LiT-style aligner (locked image tower, trained text tower): cached and uncached training
  give the same losses; MLM, which re-encodes raw text, keeps the text tower out of the cache with a reason.
- ``polymodal train CONFIG --finetune lora`` on an alignment config.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from finetune_fixtures import tiny_batch

from polymodal.cli import main
from polymodal.config import ConfigError, RunConfig, from_dict
from polymodal.models import AlignmentModel, MultimodalModel
from polymodal.models.persistence import ModelDirectoryError
from polymodal.peft import apply_finetune, has_adapters, merge_adapters, save_adapter
from polymodal.recipes.train import train
from polymodal.tasks import load_model, task_loss
from polymodal.training.cached_training import cached_training_setup
from polymodal.types import Batch

CLIP_VOCAB, CLIP_CONTEXT = 99, 16


@pytest.fixture(autouse=True)
def _quiet_finetune_warnings():
    # Freezing the randomly initialised tiny preset towers is the point of these tests, not a mistake.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="finetune: .* randomly initialised")
        yield


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    """A tiny random Hugging Face CLIPModel saved with save_pretrained (the checkpoint users convert)."""
    from transformers import CLIPConfig, CLIPModel

    common = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
    config = CLIPConfig(
        text_config=dict(vocab_size=CLIP_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CLIP_CONTEXT, eos_token_id=2,
                         bos_token_id=1, pad_token_id=0, **common),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, **common),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # HF zero-inits biases: perturb so every tensor matters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    directory = tmp_path_factory.mktemp("hf") / "clip"
    model.save_pretrained(str(directory))
    return directory


def clip_modalities(hf_dir) -> dict:
    options = {"pretrained": str(hf_dir), "project": True}  # CLIP's own projections: its embedding space
    return {
        "image": {"kind": "image", "encoder": "clip_vision", "options": options,
                  "processor": {"image_size": 32, "channels": 3}},
        "text": {"kind": "text", "encoder": "clip_text", "options": options,
                 "processor": {"max_length": CLIP_CONTEXT, "vocab_size": CLIP_VOCAB}},
    }


PRESET_MODALITIES = {  # tiny from-scratch towers (BatchNorm CNN + transformer): milliseconds per step
    "image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8], "dropout": 0.0},
              "processor": {"image_size": 8, "channels": 1}},
    "text": {"kind": "text", "encoder": "text_transformer",
             "options": {"dim": 16, "depth": 1, "heads": 2, "dropout": 0.0}, "processor": {"max_length": 16}},
}


def run_config(out_dir, modalities, finetune=None, objectives=("clip",), epochs=1, limit=16) -> RunConfig:
    data = {
        "task": "alignment",
        "model": {"modalities": modalities, "embed_dim": 16, "objectives": [{"name": n} for n in objectives]},
        "data": {"name": "spoken-digits", "batch_size": 8, "eval_batch_size": 16, "limit": limit},
        "train": {"epochs": epochs, "lr": 1e-2, "warmup_ratio": 0.0, "progress": False, "log_every": 0,
                  "out_dir": str(out_dir)},
    }
    if finetune is not None:
        data["finetune"] = finetune
    return from_dict(RunConfig, data)


def raw_batch(model) -> Batch:
    """Three images and captions through the model's own processors (what predict / retrieval feed it)."""
    rng = np.random.default_rng(0)
    channels = model.config.modalities["image"].processor.get("channels", 3)
    raws = {"image": [rng.integers(0, 256, (40, 36, 3) if channels == 3 else (40, 36), dtype=np.uint8)
                      for _ in range(3)],
            "text": ["a handwritten seven", "someone says two", "the digit zero written by hand"]}
    inputs = {name: processor.collate([processor(raw) for raw in raws[name]])
              for name, processor in model.processors.items()}
    return Batch(inputs=inputs, present={name: torch.ones(3, dtype=torch.bool) for name in inputs},
                 ids=["a", "b", "c"])


@torch.no_grad()
def embeddings(model, batch) -> dict[str, torch.Tensor]:
    model.eval()
    return {name: model.encode(batch, name) for name in model.modality_names}


def assert_same_embeddings(a, b, atol=1e-6):
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------- HF CLIP + LoRA


def test_lora_on_the_text_tower_of_a_converted_hf_clip_through_train(tmp_path, hf_clip_dir):
    finetune = {"encoders": {"text": "lora", "image": "frozen"}, "lora": {"r": 4}}
    config = run_config(tmp_path / "run", clip_modalities(hf_clip_dir), finetune, epochs=2)
    converted = AlignmentModel(config.model)  # the checkpoint as converted, before any training
    summary = train(config, verbose=False)

    parts = summary["finetune"]["components"]
    assert parts["encoder.image"]["strategy"] == "frozen" and parts["encoder.image"]["trainable"] == 0
    assert parts["encoder.text"]["strategy"] == "lora"
    assert 0 < parts["encoder.text"]["trainable"] < 0.2 * parts["encoder.text"]["total"]
    assert parts["projections"]["trainable"] == parts["projections"]["total"] and parts["logit_scale"]["trainable"]
    # The locked image tower was encoded once and read from the feature cache (contrastive: pooled only).
    cache = summary["feature_cache"]
    assert cache["modalities"] == ["image"] and not cache["all_cached"]
    assert {s: r["image"]["status"] for s, r in cache["splits"].items()} == {"train": "miss", "val": "miss"}
    assert cache["splits"]["train"]["image"]["store"] == "pooled"

    best = load_model(tmp_path / "run" / "best")
    assert isinstance(best, AlignmentModel) and best.finetune["encoders"] == {"text": "lora", "image": "frozen"}
    assert has_adapters(best.encoders["text"]) and not has_adapters(best.encoders["image"])
    before = converted.encoders.state_dict()
    after = best.encoders.state_dict()
    for key, value in converted.encoders["image"].state_dict().items():
        assert torch.equal(after[f"image.{key}"], value), key  # the frozen tower: bit-identical
    lora = {k: v for k, v in after.items() if "lora_" in k}
    assert lora and all(k.startswith("text.") for k in lora)
    assert all(v.any() for k, v in lora.items() if "lora_B" in k)  # B started at zero: the adapters trained
    for key, value in after.items():  # every base weight of the text tower is the checkpoint's
        if "lora_" not in key:
            assert torch.equal(value, before[key.replace(".base_layer", "")]), key

    batch = raw_batch(best)
    trained = embeddings(best, batch)
    base = embeddings(converted, batch)
    assert (trained["text"] - base["text"]).abs().max() > 1e-4  # LoRA changed the text tower's output

    # save → load: the recorded finetune section rebuilds the adapters before the weights load
    best.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["finetune"]["encoders"]["text"] == "lora"
    assert_same_embeddings(embeddings(load_model(tmp_path / "again"), batch), trained, atol=0)

    # merge: a plain model (no PEFT modules, no finetune record) with the same outputs, saved as an ordinary one
    merged = merge_adapters(copy.deepcopy(best))
    assert not has_adapters(merged) and merged.finetune is None
    assert_same_embeddings(embeddings(merged, batch), trained, atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    assert "finetune" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    assert_same_embeddings(embeddings(load_model(tmp_path / "merged"), batch), trained, atol=1e-5)


# ---------------------------------------------------------------------------------------------- strategies


def preset_aligner(objectives=("clip",)) -> AlignmentModel:
    torch.manual_seed(0)
    modalities = {
        "image": {"kind": "image", "encoder": "image_vit",
                  "options": {"image_size": 8, "patch_size": 4, "dim": 16, "depth": 1, "heads": 2},
                  "processor": {"image_size": 8, "channels": 3}},
        "text": {"kind": "text", "encoder": "text_transformer",
                 "options": {"vocab_size": 40, "dim": 16, "depth": 1, "heads": 2, "max_positions": 16,
                             "dropout": 0.0},
                 "processor": {"max_length": 16, "vocab_size": 40}},
    }
    config = run_config("unused", modalities, objectives=objectives)
    return AlignmentModel(config.model)


def steps(model, n=3):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    batch = tiny_batch()
    for _ in range(n):
        model.train()
        optimizer.zero_grad()
        task_loss(model, batch).backward()
        optimizer.step()
    model.eval()


ADAPTER_KEYS = {"lora": "lora_", "loha": "hada_", "ia3": "ia3_", "prompt": "prompt_embeddings"}


@pytest.mark.parametrize("strategy", ["lora", "loha", "ia3", "prompt", "frozen"])
def test_each_strategy_on_an_aligner_trains_only_its_part_and_reloads(tmp_path, strategy):
    model = preset_aligner()
    summary = apply_finetune(model, {"encoders": {"text": strategy, "image": "frozen"}})
    assert summary.components["encoder.image"].trainable == 0
    assert summary.components["encoder.text"].strategy == strategy
    start = {k: v.clone() for k, v in model.state_dict().items()}
    steps(model)
    end = model.state_dict()
    moved = {k for k in end if not torch.equal(end[k], start[k])}
    tower = {k for k in moved if k.startswith("encoders.")}
    if strategy == "frozen":
        assert not tower
    else:  # only the strategy's own weights move inside the towers
        assert tower and all(ADAPTER_KEYS[strategy] in k for k in tower), tower
    assert any(k.startswith("projections.") for k in moved) and "logit_scale" in moved

    model.save_pretrained(tmp_path / "model")
    again = AlignmentModel.from_pretrained(tmp_path / "model")
    batch = tiny_batch()
    with torch.no_grad():
        for name in model.modality_names:
            torch.testing.assert_close(again.encode(batch, name), model.encode(batch, name), atol=1e-6, rtol=0)


def test_linear_probe_on_an_aligner_trains_projections_scale_and_objective_layers():
    """linear_probe on an aligner: every encoder frozen; its linear read-out (the projections) trains, with the
    logit scale and the objectives' own layers (ITM's cross-attention and classifier)."""
    model = preset_aligner(objectives=("clip", "itm"))
    summary = apply_finetune(model, "linear_probe")
    assert {summary.components[f"encoder.{n}"].trainable for n in model.modality_names} == {0}
    for part in ("projections", "objectives", "logit_scale"):
        assert summary.components[part].trainable == summary.components[part].total > 0, part
    encoders = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    projections = {k: v.clone() for k, v in model.projections.state_dict().items()}
    steps(model)
    assert all(torch.equal(model.encoders.state_dict()[k], v) for k, v in encoders.items())
    assert any(not torch.equal(model.projections.state_dict()[k], v) for k, v in projections.items())


def test_adapter_only_save_of_an_aligner_round_trips(tmp_path):
    base = preset_aligner()
    base.save_pretrained(tmp_path / "base")
    model = AlignmentModel.from_pretrained(tmp_path / "base")
    apply_finetune(model, {"default": "lora", "lora": {"r": 2}})
    steps(model)
    model.zeroshot = {"classnames": ["zero", "one"], "templates": {"image": ["a photo of {}"]}}
    save_adapter(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors"}
    payload = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert payload["task"] == "alignment" and "modalities" not in payload["model"]

    again = AlignmentModel.from_pretrained(tmp_path / "adapter")
    assert again.zeroshot == model.zeroshot and again.finetune == model.finetune
    batch = tiny_batch()
    with torch.no_grad():
        for name in model.modality_names:
            torch.testing.assert_close(again.encode(batch, name), model.encode(batch, name), atol=1e-6, rtol=0)
    with pytest.raises(ModelDirectoryError, match="an adapter of a alignment model, not a classifier"):
        MultimodalModel.from_pretrained(tmp_path / "adapter")


# ---------------------------------------------------------------------------------------------- feature cache


def history(summary, keys=("train_loss", "val_loss")) -> list[float]:
    return [row[key] for row in summary["fit"]["history"] for key in keys]


@pytest.mark.parametrize(("objectives", "finetune", "store", "all_cached"), [
    (("clip",), {"encoders": {"image": "frozen"}}, "pooled", False),  # LiT: locked image tower
    (("clip", "itm"), {"encoders": {"image": "frozen"}}, "tokens", False),  # ITM reads the image tokens
    (("clip",), {"default": "linear_probe"}, "pooled", True),  # both towers cached: the cache alone trains
])
def test_cached_and_uncached_alignment_training_give_the_same_losses(tmp_path, objectives, finetune, store,
                                                                     all_cached):
    cache_dir = str(tmp_path / "cache")
    runs = {}
    for name, mode in (("off", "off"), ("miss", "on"), ("hit", "on")):
        config = run_config(tmp_path / name, PRESET_MODALITIES, dict(finetune, cache_features=mode,
                                                                     cache_dir=cache_dir),
                            objectives=objectives, epochs=2, limit=24)
        runs[name] = train(config, verbose=False, evaluate_test=False)
    assert runs["off"]["feature_cache"] is None
    for name in ("miss", "hit"):
        report = runs[name]["feature_cache"]
        assert report["all_cached"] is all_cached and report["skipped"] == {}
        statuses = {r["status"] for split in report["splits"].values() for r in split.values()}
        assert statuses == {name}
        assert {r["store"] for split in report["splits"].values() for r in split.values()} == {store}
        np.testing.assert_allclose(history(runs[name]), history(runs["off"]), atol=1e-6, rtol=0)
    # The saved models are full raw-input models with the same weights. Cached encoder outputs can differ from
    # live ones in the last bits (another batch composition in the matmuls), and Adam turns the sign of a
    # near-zero gradient into a whole step of lr = 1e-2 for that element: so nearly every element agrees to 1e-4,
    # and none is further apart than a few such steps.
    a = load_model(tmp_path / "hit" / "best").state_dict()
    b = load_model(tmp_path / "off" / "best").state_dict()
    assert a.keys() == b.keys()
    differ = total = 0
    for key in a:
        gap = (a[key].double() - b[key].double()).abs()
        differ += int((gap > 1e-4 + 1e-4 * b[key].double().abs()).sum())
        total += gap.numel()
        assert (float(gap.max()) if gap.numel() else 0.0) <= 0.1, key
    assert differ <= max(2, total // 1000), (differ, total)


@pytest.mark.parametrize("cached", [["image"], ["image", "text"]])
def test_cached_feature_model_over_an_aligner_equals_the_model(tmp_path, cached):
    """encode_raw + forward_encoded from cached outputs = forward, with a sample lacking its text (presence
    masks), ITM reading cached tokens, and (everything cached) batches that carry no inputs at all."""
    from torch.utils.data import DataLoader

    from polymodal.training.feature_cache import CachedFeatureDataset, CachedFeatureModel, FeatureCache

    model = preset_aligner(objectives=("clip", "itm"))
    apply_finetune(model, {"encoders": {name: "frozen" for name in cached}})
    model.eval()
    batches = [tiny_batch(6, seed=1, start=0), tiny_batch(6, seed=2, start=6)]
    cache = FeatureCache(tmp_path / "cache")
    reports = cache.prepare(model, DataLoader(batches, batch_size=None), modalities=cached)
    assert {r.store for r in reports.values()} == {"tokens"}  # ITM reads token outputs
    features = cache.load(reports)
    wrapped = CachedFeatureModel(model, features)
    for batch in batches:
        if len(cached) == 2:  # what the cache-only loader yields: ids, presence, labels
            dataset = CachedFeatureDataset(features)
            fed = dataset.collate([dataset.ids.index(i) for i in batch.ids])
            assert fed.inputs == {} and torch.equal(fed.present["text"], batch.present["text"])
        else:
            fed = batch
        assert wrapped.loss_counts(fed) == model.loss_counts(batch)
        with torch.no_grad():
            torch.manual_seed(5)  # ITM draws its hard negatives
            expected = model(batch)
            torch.manual_seed(5)
            got = wrapped(fed)
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-6, rtol=0)
        assert got.losses.keys() == expected.losses.keys() == {"clip/image-text", "itm/image-text"}
        for name in expected.embeddings:
            torch.testing.assert_close(got.embeddings[name], expected.embeddings[name], atol=1e-6, rtol=0)


def test_mlm_keeps_the_text_tower_out_of_the_cache_with_a_reason(tmp_path):
    """MLM re-encodes masked text from the raw ids: a frozen text tower cannot be read from the cache."""
    config = run_config(tmp_path / "run", PRESET_MODALITIES, {"default": "frozen"}, objectives=("clip", "mlm"))
    from polymodal.tasks import get_task

    task = get_task("alignment")
    _, loaders, labels = task.prepare_data(config, splits=("train",))
    model = task.build_model(config, labels)
    apply_finetune(model, config.finetune)
    wrapped, _, report = cached_training_setup(model, loaders, config, tmp_path / "run")
    assert report["modalities"] == ["image"]
    assert report["skipped"] == {"text": "objective 'mlm' re-encodes the raw 'text' inputs (it cannot read cached "
                                          "encoder outputs)"}
    assert report["splits"]["train"]["image"]["store"] == "tokens"  # MLM reads the image tokens
    batch = task.prepare_batch(wrapped, next(iter(loaders["train"])))
    assert set(wrapped.loss_counts(batch)) == {"clip/image-text", "mlm/image-text"}
    assert torch.isfinite(task.training_output(wrapped, wrapped(batch), batch).loss)

    config.finetune.cache_features = "on"
    with pytest.raises(ConfigError, match=r"finetune\.cache_features=on .*text: objective 'mlm' re-encodes the raw "
                                          r"'text' inputs"):
        cached_training_setup(model, loaders, config, tmp_path / "run2")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_train_finetune_lora_on_an_alignment_config(tmp_path, capsys):
    recipe = tmp_path / "align.yaml"
    recipe.write_text(json.dumps({
        "task": "alignment",
        "model": {"modalities": PRESET_MODALITIES, "embed_dim": 16, "objectives": [{"name": "clip"}]},
        "data": {"name": "spoken-digits", "batch_size": 8, "eval_batch_size": 16, "limit": 16},
        "train": {"epochs": 1, "progress": False, "log_every": 0},
    }))
    run = tmp_path / "run"
    rc = main(["train", str(recipe), "--finetune", "lora", "--set", "finetune.lora.r=2", "--out", str(run)])
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((run / "best" / "config.json").read_text())
    assert saved["task"] == "alignment" and saved["finetune"]["default"] == "lora"
    assert saved["finetune"]["lora"]["r"] == 2
    parts = json.loads((run / "metrics.json").read_text())["finetune"]["components"]
    assert {parts[f"encoder.{n}"]["strategy"] for n in ("image", "text")} == {"lora"}
    model = load_model(run / "best")
    assert has_adapters(model.encoders["image"]) and has_adapters(model.encoders["text"])
