"""The generation tasks' feature cache (training.generation_cache): frozen attachment encoders are run once per
split, the run then trains from the stored outputs with the same losses as the uncached run, the cache is reused
(hit) or rebuilt with the reason (stale) when data, weights or processor options change, ``on`` refuses an encoder
that trains, ``off`` never caches, and the saved model still works on raw inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from polymodal.config import ConfigError, ModalityConfig, RunConfig, from_dict
from polymodal.data import build_processors
from polymodal.data.errors import DataError
from polymodal.generation.data import GenerationDataset
from polymodal.training.generation_cache import (
    AttachmentCache,
    CachedAttachmentDataset,
    CachedAttachments,
    generation_cache_setup,
)

from .vlm_fixtures import clip, make_model

TINY_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 256}
FROZEN_IMAGE = {"encoder": {"kind": "image", "processor": {"image_size": 16}, "options": {"channels": [8, 16, 16]}},
                "freeze_encoder": True}


def run_config(tmp_path, name: str, stage: int = 1, cache: str = "auto", cache_dir=None, epochs: int = 2,
               image: dict | None = None) -> RunConfig:
    finetune = {"cache_features": cache, **({"cache_dir": str(cache_dir)} if cache_dir else {})}
    return from_dict(RunConfig, {
        "task": "captioning",
        "data": {"name": "scenes", "limit": 12, "batch_size": 4, "eval_batch_size": 6},
        "model": {"modalities": {"image": image or FROZEN_IMAGE}, "decoder": {"options": TINY_DECODER},
                  "tokenizer": {"vocab_size": 300}, "stage": stage},
        "train": {"epochs": epochs, "out_dir": str(tmp_path / name), "progress": False, "log_every": 1, "lr": 3e-3},
        "generate": {"max_new_tokens": 4, "validate_samples": 3, "bootstrap": 0, "meteor": False},
        "finetune": finetune,
    })


def step_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row["kind"] == "step"]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def stage_one_runs(tmp_path_factory):
    """The same stage-1 run three times: uncached, cached (builds), cached again into a new run (reuses)."""
    from polymodal.recipes.train import train

    tmp = tmp_path_factory.mktemp("stage1")
    shared = tmp / "shared_cache"
    plain = train(run_config(tmp, "off", cache="off"), verbose=False)
    cached = train(run_config(tmp, "on", cache="on", cache_dir=shared), verbose=False)
    again = train(run_config(tmp, "again", cache="auto", cache_dir=shared), verbose=False, evaluate_test=False)
    return tmp, plain, cached, again


def test_cached_stage_one_has_the_uncached_losses(stage_one_runs):
    tmp, plain, cached, again = stage_one_runs
    reference = step_losses(tmp / "off")
    assert len(reference) == 6  # 12 rows / batch 4 × 2 epochs
    np.testing.assert_allclose(step_losses(tmp / "on"), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step_losses(tmp / "again"), reference, rtol=1e-5, atol=1e-6)
    for a, b in zip(plain["fit"]["history"], cached["fit"]["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["val_cider_d"] == pytest.approx(b["val_cider_d"], abs=1e-9)  # validation generates from the cache


def test_the_cache_report_says_miss_then_hit(stage_one_runs):
    tmp, plain, cached, again = stage_one_runs
    assert plain["feature_cache"] is None and not (tmp / "off" / "feature_cache").exists()
    report = cached["feature_cache"]
    assert report["modalities"] == ["image"] and report["all_cached"] and report["skipped"] == {}
    assert report["directory"] == str(tmp / "shared_cache")
    for split in ("train", "val"):
        entry = report["splits"][split]["image"]
        assert entry["status"] == "miss" and entry["num_samples"] == 12 and entry["num_attachments"] == 12
        assert entry["disk_bytes"] > 0 and entry["seconds"] >= 0
        hit = again["feature_cache"]["splits"][split]["image"]
        assert hit["status"] == "hit" and hit["directory"] == entry["directory"]
    assert "test" not in report["splits"]
    saved = json.loads((tmp / "on" / "metrics.json").read_text())
    assert saved["feature_cache"]["splits"]["train"]["image"]["status"] == "miss"


def test_the_model_saved_from_a_cached_run_works_on_raw_inputs(stage_one_runs):
    """best/ holds the full model (encoder included): the test split, read raw, scores as the uncached run's."""
    from polymodal.tasks import load_model

    tmp, plain, cached, again = stage_one_runs
    model = load_model(cached["model_dir"])
    assert "image" in model.encoders
    for name, entry in plain["test"]["metrics"].items():
        assert cached["test"]["metrics"][name]["value"] == pytest.approx(entry["value"], abs=1e-9), name
    raw = {"prompt": "<image>\ndescribe the picture.",
           "attachments": {"image": [{"pixel_values": torch.rand(3, 16, 16)}]}}
    assert isinstance(model.generate_text([raw], max_new_tokens=3)[0], str)


def test_stage_two_with_a_frozen_encoder_is_cached_with_the_same_losses(tmp_path):
    from polymodal.recipes.train import train

    plain = train(run_config(tmp_path, "off", stage=2, cache="off", epochs=1), verbose=False, evaluate_test=False)
    cached = train(run_config(tmp_path, "auto", stage=2, epochs=1), verbose=False, evaluate_test=False)
    assert cached["feature_cache"]["splits"]["train"]["image"]["status"] == "miss"
    assert plain["parameters"]["trainable"] == cached["parameters"]["trainable"]  # the decoder trains in both
    np.testing.assert_allclose(step_losses(tmp_path / "auto"), step_losses(tmp_path / "off"), rtol=1e-5, atol=1e-6)


def test_on_with_an_encoder_that_trains_is_a_config_error_and_auto_skips_it(tmp_path):
    from polymodal.recipes.train import train

    training_image = {**FROZEN_IMAGE, "freeze_encoder": False}
    with pytest.raises(ConfigError, match=r"finetune.cache_features=on.*image.*trains.*freeze_encoder"):
        train(run_config(tmp_path, "on", stage=2, cache="on", image=training_image), verbose=False)
    summary = train(run_config(tmp_path, "auto", stage=2, epochs=1, image=training_image), verbose=False,
                    evaluate_test=False)
    assert summary["feature_cache"] is None and not (tmp_path / "auto" / "feature_cache").exists()


def test_generation_finetune_section_takes_only_the_cache_keys(tmp_path):
    config = run_config(tmp_path, "x", cache="off", cache_dir=tmp_path / "c")
    assert config.finetune.cache_features == "off" and config.finetune.cache_dir == str(tmp_path / "c")
    with pytest.raises(ConfigError, match="finetune.default: task 'captioning' is trained in stages"):
        from_dict(RunConfig, {"task": "captioning", "finetune": {"default": "lora", "cache_features": "on"}})
    with pytest.raises(ConfigError, match="finetune.encoders"):
        from_dict(RunConfig, {"task": "captioning", "finetune": {"encoders": {"image": "frozen"}}})
    with pytest.raises(ConfigError, match="finetune.cache_features"):
        from_dict(RunConfig, {"task": "captioning", "finetune": {"cache_features": "always"}})


# ---------------------------------------------------------------------------------------------- the store


def image_rows(count: int, seed: int = 0, size: int = 8) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"r{i}", "prompt": "<image> what is this?", "answer": ["a red square", "a blue circle"][i % 2],
             "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)} for i in range(count)]


def image_loader(rows, processor: dict | None = None) -> DataLoader:
    processors = build_processors({"image": ModalityConfig(kind="image", processor={"image_size": 8, **(processor or {})})})
    dataset = GenerationDataset(rows, processors)
    return DataLoader(dataset, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0),
                      collate_fn=dataset.collate)


def statuses(cache, model, loader) -> tuple[str, str, str]:
    entry = cache.prepare(model, loader, ["image"])["image"]
    return entry["status"], entry["reason"], entry["directory"]


def test_the_key_changes_with_data_weights_and_processor_options(tmp_path):
    model = make_model().configure_stage(1)
    cache = AttachmentCache(tmp_path / "train")
    rows = image_rows(5)
    status, _, first = statuses(cache, model, image_loader(rows))
    assert status == "miss"
    assert statuses(cache, model, image_loader(rows))[:2] == ("hit", "encoder, processor and data unchanged")

    changed = image_rows(5)
    changed[3]["image"] = changed[3]["image"].copy()
    changed[3]["image"][0, 0, 0] ^= 0xFF  # one pixel of one row
    status, reason, second = statuses(cache, model, image_loader(changed))
    assert (status, reason) == ("stale", "data changed") and second != first
    assert not (tmp_path / "train" / "image" / first.rsplit("/", 1)[-1]).exists()  # the stale key is gone

    # an option that leaves these inputs unchanged still invalidates; one that changes them changes the data too
    assert statuses(cache, model, image_loader(changed, {"max_pixels": 10_000}))[:2] == (
        "stale", "processor options changed")
    assert statuses(cache, model, image_loader(changed, {"mean": [0.5, 0.5, 0.5]}))[:2] == (
        "stale", "processor options, data changed")
    with torch.no_grad():
        model.encoders["image"].proj.weight.mul_(1.01)
    assert statuses(cache, model, image_loader(changed, {"mean": [0.5, 0.5, 0.5]}))[:2] == (
        "stale", "encoder weights changed")
    # the connector is not part of the key: what is cached is the encoder's output
    with torch.no_grad():
        next(model.connectors.parameters()).add_(1.0)
    assert statuses(cache, model, image_loader(changed, {"mean": [0.5, 0.5, 0.5]}))[0] == "hit"
    assert len([p for p in (tmp_path / "train" / "image").iterdir()]) == 1
    reordered = image_loader(list(reversed(changed)), {"mean": [0.5, 0.5, 0.5]})
    assert statuses(cache, model, reordered)[:2] == ("stale", "data changed")  # the sample order is part of the key


def test_a_build_cut_short_is_never_a_hit(tmp_path):
    model = make_model().configure_stage(1)
    cache = AttachmentCache(tmp_path)
    loader = image_loader(image_rows(4))
    directory = statuses(cache, model, loader)[2]
    index = f"{directory}/index.json"
    (tmp_path / "image" / directory.rsplit("/", 1)[-1] / "index.json").unlink()  # crashed before index.json
    assert statuses(cache, model, loader)[:2] == ("miss", "nothing cached yet")
    assert json.loads(open(index).read())["counts"] == [1, 1, 1, 1]
    # a leftover temporary build (even one holding an index) is ignored
    leftover = tmp_path / "image" / ".building-1-2"
    leftover.mkdir()
    (leftover / "index.json").write_text("{}")
    assert statuses(cache, model, loader)[0] == "hit"


def test_cached_dataset_serves_encoder_outputs_with_the_raw_losses(tmp_path):
    model = make_model().configure_stage(1)
    loader = image_loader(image_rows(7))
    entry = AttachmentCache(tmp_path).prepare(model, loader, ["image"])["image"]
    dataset = CachedAttachmentDataset(loader.dataset, {"image": CachedAttachments.load(entry["directory"], "image")})
    assert len(dataset) == 7
    raw, cached = loader.dataset[4], dataset[4]
    assert set(cached["attachments"]["image"][0]) == {"encoded_tokens", "encoded_mask"}
    assert cached["attachments"]["image"][0]["encoded_tokens"].shape == (4, 16)  # 4 patches × D_enc
    assert {k: v for k, v in cached.items() if k != "attachments"} == {k: v for k, v in raw.items()
                                                                        if k != "attachments"}
    collate = model.collator()
    batch_raw = collate([loader.dataset[i] for i in range(7)])
    batch_cached = collate([dataset[i] for i in range(7)])
    with torch.no_grad():
        torch.testing.assert_close(model(batch_cached).loss_sum, model(batch_raw).loss_sum, rtol=1e-6, atol=1e-5)


def test_variable_length_and_several_attachments_per_sample_match_the_raw_losses(tmp_path):
    """Audio clips of 2..7 frames, 0-2 clips per sample: each stored trimmed to its real frames, re-padded per
    batch; the loss of any batch equals the raw one."""
    model = make_model(audio=True).configure_stage(1)
    counts = [1, 2, 0, 1, 2, 1]
    samples, seed = [], 0
    for i, count in enumerate(counts):
        clips = []
        for _ in range(count):
            frames = 2 + seed % 6
            item = clip(seed, 7)
            item["feature_mask"][frames:] = 0  # padded to 7 frames, `frames` of them real
            clips.append(item)
            seed += 1
        prompt = " ".join(["<audio>"] * count) + " what digit?"
        samples.append({"id": f"s{i}", "prompt": prompt, "answer": "seven",
                        "attachments": {"audio": clips} if clips else {}})
    loader = DataLoader(samples, batch_size=4, collate_fn=GenerationDataset.collate)
    entry = AttachmentCache(tmp_path).prepare(model, loader, ["audio"])["audio"]
    features = CachedAttachments.load(entry["directory"], "audio")
    assert features.counts == counts and entry["num_attachments"] == sum(counts)
    assert features.tensors["length"].tolist() == [2 + s % 6 for s in range(sum(counts))]

    def cached(i):
        items = features.items(i, f"s{i}", counts[i])
        return {**samples[i], "attachments": {"audio": items} if items else {}}

    collate = model.collator()
    for order in ([0, 1, 2, 3], [5, 1, 3], [2], [4, 0, 5, 1, 3]):
        with torch.no_grad():
            raw = model(collate([samples[i] for i in order]))
            out = model(collate([cached(i) for i in order]))
        torch.testing.assert_close(out.loss_sum, raw.loss_sum, rtol=1e-6, atol=1e-5)
        assert out.attention_mask.sum().item() == raw.attention_mask.sum().item()  # the same real tokens
    with pytest.raises(DataError, match=r"feature cache \(audio\): row 1 .*not the row the cache was built from"):
        features.items(1, "s1", 3)
    # a split where no sample has the modality: an empty cache, still a hit the second time
    silent = DataLoader([samples[2]], batch_size=2, collate_fn=GenerationDataset.collate)
    entry = AttachmentCache(tmp_path / "silent").prepare(model, silent, ["audio"])["audio"]
    assert (entry["num_samples"], entry["num_attachments"]) == (1, 0)
    assert CachedAttachments.load(entry["directory"], "audio").items(0, "s2", 0) == []
    assert AttachmentCache(tmp_path / "silent").prepare(model, silent, ["audio"])["audio"]["status"] == "hit"


def test_off_returns_the_loaders_untouched(tmp_path):
    model = make_model().configure_stage(1)
    loaders = {"train": image_loader(image_rows(3))}
    config = from_dict(RunConfig, {"task": "captioning", "finetune": {"cache_features": "off"}})
    assert generation_cache_setup(model, loaders, config, tmp_path) == (model, loaders, None)
    assert not any(tmp_path.iterdir())
