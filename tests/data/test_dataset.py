"""build_dataloaders on JSONL / CSV / JSON manifests: relative paths, empty cells, column mapping, and every
manifest error surfacing as a DataError naming the row and file (or skipped and reported) before any batch."""

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
from polymodal.data import DataError, build_dataloaders, build_processors, read_records

MODALITIES = {
    "photo": {"kind": "image", "column": "img_path", "processor": {"image_size": 8, "channels": 3}},
    "voice": {"kind": "audio", "column": "wav", "processor": {"sample_rate": 8000, "max_seconds": 0.25,
                                                             "n_fft": 128, "hop_length": 64, "n_mels": 8}},
    "text": {"kind": "text", "processor": {"max_length": 6}},
}
COLUMNS = ["key", "img_path", "wav", "text", "target"]


@pytest.fixture
def samples(tmp_path):
    """Six samples in data/ (PNG + WAV), rows written by the tests next to or above them."""
    data = tmp_path / "data"
    (data / "media").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(data / f"media/{i}.png")
        sf.write(data / f"media/{i}.wav", rng.uniform(-0.5, 0.5, 1000 + 300 * i).astype(np.float32), 8000)
        rows.append({"key": f"k{i}", "img_path": f"media/{i}.png", "wav": f"media/{i}.wav",
                     "text": f"number {i}", "target": ["low", "mid", "high"][i % 3]})
    return data, rows


def write(path, rows, columns=COLUMNS):
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: "" if r.get(k) is None else r.get(k) for k in columns} for r in rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config_for(labels=(), **data) -> Config:
    return from_dict(Config, {
        "model": {"modalities": MODALITIES, "head": {"labels": list(labels)}},
        "data": {"label_column": "target", "id_column": "key", "batch_size": 3, "eval_batch_size": 6, **data},
    })


def load(config, splits=("train",)):
    return build_dataloaders(config, build_processors(config.model.modalities), splits=splits)


def all_rows(loader):
    dataset = loader.dataset
    return dataset.collate([dataset[i] for i in range(len(dataset))])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_manifest_formats_give_identical_batches(samples, suffix, monkeypatch, tmp_path):
    data, rows = samples
    reference = write(data / "ref.jsonl", rows)
    manifest = write(data / f"train{suffix}", rows)
    monkeypatch.chdir(tmp_path)  # a different working directory: paths resolve against the manifest
    (ref_loaders, labels), (loaders, labels2) = load(config_for(train=str(reference))), load(config_for(train=str(manifest)))
    assert labels == labels2 == ["high", "low", "mid"]  # sorted labels of the train split
    ref, batch = all_rows(ref_loaders["train"]), all_rows(loaders["train"])
    assert batch.ids == [f"k{i}" for i in range(6)]
    assert batch.labels.tolist() == [1, 2, 0, 1, 2, 0]
    assert batch.inputs["photo"]["pixel_values"].shape == (6, 3, 8, 8)
    assert batch.inputs["voice"]["features"].shape == (6, 8, 32)
    # the audio mask covers the real frames: 1 + (1000 + 300 i) // 64, capped at 0.25 s = 32 frames
    assert batch.inputs["voice"]["feature_mask"].sum(1).tolist() == [16, 21, 26, 30, 32, 32]
    for name in batch.inputs:
        for key in batch.inputs[name]:
            assert torch.equal(ref.inputs[name][key], batch.inputs[name][key]), (name, key)


def test_absolute_paths_bom_and_spaced_header(samples):
    data, rows = samples
    for row in rows:
        row["img_path"] = str(data / row["img_path"])
    path = data / "excel.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as handle:  # what spreadsheet programs write
        handle.write(", ".join(COLUMNS) + "\n")
        for row in rows:
            handle.write(",".join(str(row[c]) for c in COLUMNS) + "\n")
    records, columns = read_records(path)
    assert columns == COLUMNS
    loaders, _ = load(config_for(train=str(path)))
    assert all_rows(loaders["train"]).ids == [f"k{i}" for i in range(6)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_empty_cells_are_carried_as_masks(samples, suffix):
    data, rows = samples
    rows[0]["wav"] = ""
    rows[1]["img_path"] = None
    rows[2]["text"] = "   "
    rows[3].pop("wav")
    loaders, _ = load(config_for(train=str(write(data / f"train{suffix}", rows))))
    batch = all_rows(loaders["train"])
    assert batch.present["voice"].tolist() == [False, True, True, False, True, True]
    assert batch.present["photo"].tolist() == [True, False, True, True, True, True]
    assert batch.present["text"].tolist() == [True, True, False, True, True, True]
    assert not batch.inputs["voice"]["feature_mask"][[0, 3]].any()
    assert torch.all(batch.inputs["photo"]["pixel_values"][1] == 0)
    assert batch.inputs["text"]["attention_mask"][2].sum() == 0


def truncated_jpeg(path, row):
    """A JPEG cut in half: PIL's verify() accepts it, only decoding finds the damage."""
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    row["img_path"] = f"media/{path.name}"


CORRUPTIONS = {
    "corrupt-image": (
        lambda data, rows: (data / "media/2.png").write_bytes((data / "media/2.png").read_bytes()[:60]),
        r"row 3 \(id 'k2'\): photo: image file '[^']*media/2\.png'",
    ),
    "truncated-jpeg": (
        lambda data, rows: truncated_jpeg(data / "media/0.jpg", rows[0]),
        r"row 1 \(id 'k0'\): photo: image file '[^']*media/0\.jpg' is corrupt: image file is truncated",
    ),
    "not-an-image": (
        lambda data, rows: (data / "media/4.png").write_text("hello"),
        r"row 5 \(id 'k4'\): photo: image file '[^']*media/4\.png' is not a readable image",
    ),
    "missing-audio": (
        lambda data, rows: (data / "media/1.wav").unlink(),
        r"row 2 \(id 'k1'\): voice: audio file '[^']*media/1\.wav' does not exist",
    ),
    "garbage-audio": (
        lambda data, rows: (data / "media/5.wav").write_bytes(b"RIFF\x00\x00garbage"),
        r"row 6 \(id 'k5'\): voice: audio file '[^']*media/5\.wav' is not readable audio",
    ),
    "bad-label": (
        lambda data, rows: rows[3].update(target="huge"),
        r"row 4 \(id 'k3'\): label 'huge' is not in the label set \[high, low, mid\]",
    ),
    "no-label": (
        lambda data, rows: rows[0].update(target=""),
        r"row 1 \(id 'k0'\): has no label",
    ),
    "all-cells-empty": (
        lambda data, rows: rows[2].update(img_path="", wav="", text=""),
        r"row 3 \(id 'k2'\): has none of the modalities \['photo', 'voice', 'text'\]",
    ),
    "text-not-a-string": (
        lambda data, rows: rows[1].update(text=["a", "list"]),
        r"row 2 \(id 'k1'\): text: text input must be a string, got list",
    ),
}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_manifest_errors_name_row_and_file(samples, case, suffix):
    if case == "text-not-a-string" and suffix == ".csv":
        pytest.skip("CSV cells are always strings")
    data, rows = samples
    mutate, message = CORRUPTIONS[case]
    mutate(data, rows)
    manifest = write(data / f"train{suffix}", rows)
    with pytest.raises(DataError, match=rf"train\{suffix} {message}"):
        load(config_for(labels=["high", "low", "mid"], train=str(manifest)))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_wrong_column_names_the_column_and_columns_found(samples, suffix):
    data, rows = samples
    for row in rows:
        row["image"] = row.pop("img_path")
    manifest = write(data / f"train{suffix}", rows, columns=["key", "image", "wav", "text", "target"])
    with pytest.raises(DataError, match=r"missing column 'img_path' \(modality 'photo'\); columns found: key, "):
        load(config_for(train=str(manifest)))
    config = config_for(train=str(manifest))
    config.data.label_column = "label"
    for row in rows:
        row["img_path"] = row.pop("image")
    write(manifest, rows)
    with pytest.raises(DataError, match=r"missing column 'label' \(labels\)"):
        load(config)


def test_val_label_outside_the_train_labels_names_the_val_row(samples):
    data, rows = samples
    train = write(data / "train.jsonl", [r for r in rows if r["target"] != "high"])
    val = write(data / "val.csv", rows)
    with pytest.raises(DataError, match=r"val\.csv row 3 \(id 'k2'\): label 'high' is not in the label set \[low, mid\]"):
        load(config_for(train=str(train), val=str(val)), splits=("train", "val"))


def test_skip_reports_rows_and_keeps_the_rest(samples):
    data, rows = samples
    (data / "media/1.wav").unlink()
    (data / "media/4.png").write_text("not a png")
    rows[5]["target"] = "huge"
    manifest = write(data / "train.csv", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders, _ = load(config_for(labels=["high", "low", "mid"], train=str(manifest), on_error="skip"))
    dataset = loaders["train"].dataset
    assert [row.id for row in dataset.rows] == ["k0", "k2", "k3"]
    assert [where for where, _ in dataset.skipped] == [
        "train.csv row 2 (id 'k1')", "train.csv row 5 (id 'k4')", "train.csv row 6 (id 'k5')"
    ]
    assert "media/1.wav' does not exist" in dataset.skipped[0][1]
    assert "media/4.png' is not a readable image" in dataset.skipped[1][1]
    assert "'huge'" in dataset.skipped[2][1]
    assert any("train split: skipped 3 of 6 rows" in str(w.message) for w in caught)
    assert len(all_rows(loaders["train"]).ids) == 3


def test_skip_with_every_row_bad_still_raises(samples):
    data, rows = samples
    for row in rows:
        row["target"] = "huge"
    manifest = write(data / "train.jsonl", rows)
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"no usable rows left \(6 skipped\)"):
        load(config_for(labels=["low"], train=str(manifest), on_error="skip"))


def test_broken_json_line_and_json_array_items(samples):
    data, rows = samples
    path = data / "train.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl' line 3 is not valid JSON"):
        load(config_for(train=str(path)))
    array = data / "train.json"
    array.write_text(json.dumps([rows[0], "oops"]))
    with pytest.raises(DataError, match=r"train\.json' item 2: expected a JSON object"):
        load(config_for(train=str(array)))
    latin = data / "latin.csv"
    latin.write_bytes("key,img_path,wav,text,target\nk0,,,caf\xe9,low\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv' is not UTF-8 text"):
        load(config_for(train=str(latin)))


def test_limit_and_missing_manifest(samples):
    data, rows = samples
    manifest = write(data / "train.jsonl", rows)
    loaders, labels = load(config_for(train=str(manifest), limit=2))
    assert all_rows(loaders["train"]).ids == ["k0", "k1"] and labels == ["low", "mid"]
    with pytest.raises(DataError, match=r"manifest '.*nowhere\.jsonl' does not exist"):
        load(config_for(train=str(data / "nowhere.jsonl")))
    with pytest.raises(DataError, match=r"provides none of the splits \['train'\]"):
        load(config_for(val=str(manifest)))


def test_file_broken_after_validation_fails_with_row_in_worker(samples):
    """A DataLoader worker re-raises in the main process: the message still names the row and the file."""
    data, rows = samples
    manifest = write(data / "train.jsonl", rows)
    loaders, _ = load(config_for(train=str(manifest), num_workers=1, batch_size=6), splits=("train",))
    (data / "media/3.wav").write_bytes(b"gone")
    with pytest.raises(DataError, match=r"train\.jsonl row 4 \(id 'k3'\): cannot process voice input '.*media/3\.wav'"):
        next(iter(loaders["train"]))
