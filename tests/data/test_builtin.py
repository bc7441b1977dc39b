"""The built-in spoken-digits data set: honest splits, sizes, pairing, export → manifest → same tensors, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from polymodal.cli import main
from polymodal.config import Config, from_dict
from polymodal.data import build_dataloaders, build_processors, describe_dataset, export_dataset, get_dataset
from polymodal.data.builtin.spoken_digits import LABELS, WORDS, SpokenDigits
from polymodal.data.dataset import spread_subset

SIZES = {"train": 2000, "val": 500, "test": 500}


@pytest.fixture(scope="module")
def records():
    dataset = get_dataset("spoken-digits")
    return {split: dataset.records(split) for split in dataset.splits}


def test_split_sizes_and_labels(records):
    assert {split: len(rows) for split, rows in records.items()} == SIZES
    for rows in records.values():
        assert {row["label"] for row in rows} == set(LABELS)  # every digit in every split
    assert describe_dataset("spoken-digits")["sizes"] == SIZES


def test_speakers_held_out_per_split(records):
    speakers = {split: {row["speaker"] for row in rows} for split, rows in records.items()}
    assert speakers["test"] == {"theo"} and speakers["val"] == {"nicolas"}
    assert not speakers["train"] & (speakers["val"] | speakers["test"])
    recordings = {split: {row["id"].split("-", 1)[1] for row in rows} for split, rows in records.items()}
    assert not recordings["train"] & recordings["val"] and not recordings["train"] & recordings["test"]


def test_image_indices_are_disjoint_and_match_the_label(records):
    indices = {split: {row["image_index"] for row in rows} for split, rows in records.items()}
    assert not indices["train"] & indices["val"]
    assert not indices["train"] & indices["test"]
    assert not indices["val"] & indices["test"]
    assert {s: len(i) for s, i in indices.items()} == describe_dataset("spoken-digits")["images_per_split"]
    from polymodal.data.builtin.spoken_digits import _archive

    image_digits = _archive()["image_digits"]
    for rows in records.values():
        for row in rows:
            # image, recording and text all show the same digit
            assert str(int(image_digits[row["image_index"]])) == row["label"]
            assert row["id"].split("-", 1)[1].startswith(f"{row['label']}_")
            digit = int(row["label"])
            assert WORDS[digit] in row["text"] or str(digit) in row["text"]


def test_records_types(records):
    row = records["val"][0]
    assert row["image"].dtype == np.uint8 and row["image"].shape == (8, 8) and row["image"].max() > 100
    wave, rate = row["audio"]
    assert rate == 8000 and wave.dtype == np.int16 and 0.2 < wave.shape[0] / rate < 2.5
    assert isinstance(row["text"], str) and row["label"] in LABELS
    with pytest.raises(KeyError, match="no split 'dev'"):
        SpokenDigits().records("dev")


def builtin_config(**data) -> Config:
    model = SpokenDigits().default_model_config()
    return from_dict(Config, {"model": model, "data": {"batch_size": 8, "eval_batch_size": 8, **data}})


def test_loaders_by_name(records):
    config = builtin_config(name="spoken-digits", limit=8)
    loaders, labels = build_dataloaders(config, build_processors(config.model.modalities), splits=("train", "test"))
    assert labels == LABELS
    batch = next(iter(loaders["test"]))
    assert batch.inputs["image"]["pixel_values"].shape == (8, 1, 32, 32)
    assert batch.inputs["audio"]["features"].shape == (8, 40, 101)
    chosen = spread_subset(records["test"], 8)  # evenly spaced: the split is ordered by digit
    assert batch.ids == [row["id"] for row in chosen]
    assert batch.labels.tolist() == [int(row["label"]) for row in chosen] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert all(batch.present[name].all() for name in ("image", "audio", "text"))


def full_batch(loader):
    dataset = loader.dataset
    return dataset.collate([dataset[i] for i in range(len(dataset))])


def test_export_round_trip_gives_the_same_tensors(tmp_path, records):
    manifests = export_dataset("spoken-digits", tmp_path / "export", limit=6)
    assert sorted(manifests) == ["test", "train", "val"]
    lines = [json.loads(line) for line in manifests["train"].read_text().splitlines()]
    assert [line["id"] for line in lines] == [row["id"] for row in spread_subset(records["train"], 6)]
    assert len({line["label"] for line in lines}) == 6  # a limited export still spans the classes
    assert not any(line["image"].startswith("/") for line in lines)  # relative: the folder can move
    moved = tmp_path / "moved"
    (tmp_path / "export").rename(moved)

    builtin = builtin_config(name="spoken-digits", limit=6)
    processors = build_processors(builtin.model.modalities)
    splits = ("train", "val", "test")
    expected, _ = build_dataloaders(builtin, processors, splits=splits)
    for suffix in ("jsonl", "csv"):
        from_files = builtin_config(**{split: str(moved / f"{split}.{suffix}") for split in splits})
        loaded, labels = build_dataloaders(from_files, processors, splits=splits)
        assert labels == LABELS  # head.labels of the default model config
        for split in splits:
            a, b = full_batch(expected[split]), full_batch(loaded[split])  # unshuffled
            assert a.ids == b.ids and torch.equal(a.labels, b.labels)
            for name in a.inputs:
                for key in a.inputs[name]:
                    assert torch.equal(a.inputs[name][key], b.inputs[name][key]), (suffix, split, name, key)


def test_cli_export_data_and_list(tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export-data", "--out", str(out), "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    for split in SIZES:
        with (out / f"{split}.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 3 and list(rows[0]) == ["id", "image", "audio", "text", "label"]
        assert all((out / row["image"]).is_file() and (out / row["audio"]).is_file() for row in rows)
    assert main(["export-data", "no-such-set", "--out", str(tmp_path / "x")]) == 2
    assert "no-such-set" in capsys.readouterr().err

    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for section in ("encoders:", "fusions:", "heads:", "datasets:"):
        assert section in listing
    for name in ("spoken-digits", "concat", "cross_attention", "low_rank_tensor", "image_cnn", "hf"):
        assert f"  {name} " in listing
    assert main(["list", "datasets"]) == 0
    only = capsys.readouterr().out
    assert "spoken-digits" in only and "fusions:" not in only
