"""Manifests → validated rows → DataLoaders: round trips, absent modalities, clear errors, skip mode."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.config import Config, from_dict
from polymodal.data import DataError, MultimodalDataset, build_dataloaders, build_processors, read_manifest

MODALITIES = {
    "image": {"kind": "image", "processor": {"image_size": 8, "channels": 1}},
    "audio": {"kind": "audio", "processor": {"sample_rate": 8000, "max_seconds": 0.5, "n_fft": 128, "hop_length": 64,
                                             "n_mels": 16}},
    "caption": {"kind": "text", "column": "text", "processor": {"max_length": 8}},
}


@pytest.fixture
def folder(tmp_path):
    """Four samples (PNG + WAV files in subfolders) and a helper to write manifests next to them."""
    (tmp_path / "img").mkdir()
    (tmp_path / "wav").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"img/{i}.png")
        sf.write(tmp_path / f"wav/{i}.wav", (rng.standard_normal(2000) * 3000).astype(np.int16), 8000)
        rows.append({"id": f"s{i}", "image": f"img/{i}.png", "audio": f"wav/{i}.wav", "text": f"sample {i}",
                     "label": "cat" if i % 2 else "dog"})
    return tmp_path, rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows, columns=("id", "image", "audio", "text", "label")):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") or "" for k in columns} for r in rows)
    return path


def make_config(**data):
    return from_dict(Config, {"model": {"modalities": MODALITIES}, "data": {"batch_size": 2, **data}})


def loaders_for(config):
    return build_dataloaders(config, build_processors(config.model.modalities), splits=("train", "val"))


def test_jsonl_and_csv_round_trip_with_relative_paths(folder, monkeypatch):
    root, rows = folder
    write_jsonl(root / "train.jsonl", rows)
    write_csv(root / "val.csv", rows)
    monkeypatch.chdir(root.parent)  # relative paths resolve against the manifest, not the working directory
    loaders, labels = loaders_for(make_config(train=str(root / "train.jsonl"), val=str(root / "val.csv")))
    assert labels == ["cat", "dog"]
    train = next(iter(torch.utils.data.DataLoader(loaders["train"].dataset, batch_size=4,
                                                  collate_fn=loaders["train"].dataset.collate)))
    val = next(iter(loaders["val"]))
    assert train.ids == val.ids == ["s0", "s1", "s2", "s3"]  # eval batch size 128: one batch
    assert train.labels.tolist() == [1, 0, 1, 0] and train.labels.dtype == torch.long
    for name in MODALITIES:
        for key, value in val.inputs[name].items():
            assert torch.equal(value, train.inputs[name][key]), (name, key)
    expected = np.asarray(Image.open(root / "img/1.png"), dtype=np.float32) / 255
    assert torch.allclose(train.inputs["image"]["pixel_values"][1, 0], (torch.from_numpy(expected) - 0.5) / 0.5)
    assert train.inputs["audio"]["features"].shape == (4, 16, 63)
    assert train.inputs["caption"]["input_ids"].shape[0] == 4


def test_empty_cell_means_absent_modality(folder):
    root, rows = folder
    rows[1]["audio"] = ""
    rows[2]["image"] = None
    del rows[3]["text"]
    write_jsonl(root / "train.jsonl", rows)
    write_csv(root / "val.csv", rows)
    loaders, _ = loaders_for(make_config(train=str(root / "train.jsonl"), val=str(root / "val.csv")))
    for split in ("train", "val"):
        dataset = loaders[split].dataset
        batch = dataset.collate([dataset[i] for i in range(4)])
        assert batch.present["audio"].tolist() == [True, False, True, True]
        assert batch.present["image"].tolist() == [True, True, False, True]
        assert batch.present["caption"].tolist() == [True, True, True, False]
        assert not batch.inputs["audio"]["feature_mask"][1].any()
        assert torch.all(batch.inputs["image"]["pixel_values"][2] == 0)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda root, rows: (root / "img/2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"),
         r"train\.jsonl row 3 \(id 's2'\): image: image file '.*img/2\.png' is not a readable image"),
        (lambda root, rows: (root / "wav/1.wav").unlink(),
         r"train\.jsonl row 2 \(id 's1'\): audio: audio file '.*wav/1\.wav' does not exist"),
        (lambda root, rows: rows[3].update(label="bird"),
         r"train\.jsonl row 4 \(id 's3'\): label 'bird' is not in the label set \[cat, dog\]"),
        (lambda root, rows: [r.pop("audio") for r in rows],
         r"train\.jsonl: missing column 'audio' \(modality 'audio'\); columns found: id, image, text, label"),
        (lambda root, rows: Image.new("L", (400, 400)).save(root / "img/0.png"),
         r"row 1 \(id 's0'\): image: .*img/0\.png' has 400×400 = 160,000 pixels, over the cap max_pixels=100,000"),
    ],
    ids=["corrupt-image", "missing-audio", "bad-label", "missing-column", "oversized-image"],
)
def test_validation_errors_name_row_and_file(folder, mutate, message):
    root, rows = folder
    mutate(root, rows)
    write_jsonl(root / "train.jsonl", rows)
    modalities = json.loads(json.dumps(MODALITIES))
    modalities["image"]["processor"]["max_pixels"] = 100_000
    config = from_dict(Config, {"model": {"modalities": modalities, "head": {"labels": ["cat", "dog"]}},
                                "data": {"train": str(root / "train.jsonl")}})
    with pytest.raises(DataError, match=message):
        build_dataloaders(config, build_processors(config.model.modalities), splits=("train",))


def test_empty_manifest_and_unknown_extension(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"train\.jsonl' is empty"):
        read_manifest(tmp_path / "train.jsonl", {})
    (tmp_path / "train.parquet").write_text("x")
    with pytest.raises(DataError, match=r"unsupported extension '\.parquet'"):
        read_manifest(tmp_path / "train.parquet", {})


def test_skip_mode_drops_and_reports_bad_rows(folder):
    root, rows = folder
    (root / "wav/1.wav").unlink()
    rows[3]["label"] = "bird"
    write_jsonl(root / "train.jsonl", rows)
    config = make_config(train=str(root / "train.jsonl"), on_error="skip")
    config.model.head.labels = ["cat", "dog"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders, _ = build_dataloaders(config, build_processors(config.model.modalities), splits=("train",))
    dataset = loaders["train"].dataset
    assert [row.id for row in dataset.rows] == ["s0", "s2"]
    assert [where for where, _ in dataset.skipped] == ["train.jsonl row 2 (id 's1')", "train.jsonl row 4 (id 's3')"]
    assert "wav/1.wav' does not exist" in dataset.skipped[0][1] and "'bird'" in dataset.skipped[1][1]
    assert any("skipped 2 of 4 rows" in str(w.message) for w in caught)


def test_failure_inside_the_loader_names_row_and_file(folder):
    root, rows = folder
    write_jsonl(root / "train.jsonl", rows)
    config = make_config(train=str(root / "train.jsonl"))
    loaders, _ = build_dataloaders(config, build_processors(config.model.modalities), splits=("train",))
    (root / "img/2.png").write_bytes(b"broken after validation")
    with pytest.raises(DataError, match=r"train\.jsonl row 3 \(id 's2'\): cannot process image input '.*img/2\.png'"):
        loaders["train"].dataset[2]


def test_multilabel_and_binary_label_tensors(folder):
    root, rows = folder
    processors = build_processors(make_config().model.modalities)
    write_jsonl(root / "bin.jsonl", rows)
    for i, row in enumerate(rows):
        row["label"] = ["cat", "dog"][: i % 3] if i % 2 else "dog|cat"
    write_jsonl(root / "multi.jsonl", rows)
    multi_rows = read_manifest(root / "multi.jsonl", make_config().model.modalities, task="multilabel")
    dataset = MultimodalDataset(multi_rows, processors, {"cat": 0, "dog": 1}, task="multilabel")
    labels = dataset.collate([dataset[i] for i in range(4)]).labels
    assert labels.dtype == torch.float32 and labels.tolist() == [[1, 1], [1, 0], [1, 1], [0, 0]]
    bin_rows = read_manifest(root / "bin.jsonl", make_config().model.modalities, task="binary")
    for i, row in enumerate(bin_rows):
        row.label = ["no", "yes"][i % 2]
    dataset = MultimodalDataset(bin_rows, processors, {"no": 0, "yes": 1}, task="binary")
    labels = dataset.collate([dataset[i] for i in range(4)]).labels
    assert labels.dtype == torch.float32 and labels.tolist() == [0.0, 1.0, 0.0, 1.0]
