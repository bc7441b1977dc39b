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


# ---------------------------------------------------------------------------------------------- label rule, ids


@pytest.mark.parametrize("raw,canonical", [
    (2, "2"), (2.0, "2"), ("2", "2"), ("2.0", "2"), (" 2 ", "2"), ("+2", "2"), ("2.", "2"), (-1.0, "-1"),
    ("-0", "0"), (0.5, "0.5"), ("0.5", "0.5"), ("02", "02"), ("1e3", "1e3"), (True, "true"), (" cat ", "cat"),
    (1e20, "100000000000000000000"),
])
def test_label_normalisation_rule(raw, canonical):
    from polymodal.data.manifest import normalize_label

    assert normalize_label(raw) == canonical


def test_non_finite_or_structured_labels_are_refused_with_the_row(folder, tmp_path):
    from polymodal.data.manifest import normalize_label

    with pytest.raises(DataError, match="not a finite number"):
        normalize_label(float("nan"))
    with pytest.raises(DataError, match="dict"):
        normalize_label({"a": 1})
    root, rows = folder
    rows[2]["label"] = float("inf")
    (root / "inf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes Infinity
    with pytest.raises(DataError, match="inf.jsonl row 3: label inf is not a finite number"):
        read_manifest(root / "inf.jsonl", make_config().model.modalities)
    rows[2]["label"] = float("nan")  # pandas' empty cell: a missing label, not a class "nan"
    (root / "nan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_manifest(root / "nan.jsonl", make_config().model.modalities)[2].label is None


def _twelve_rows(rows, label_of):
    """12 rows reusing the fixture's 4 files, labelled ``label_of(k)`` for k = 0..11, in shuffled order."""
    order = [7, 0, 11, 3, 10, 1, 5, 2, 9, 4, 8, 6]
    return [{**rows[k % 4], "id": f"r{k}", "label": label_of(k)} for k in order]


@pytest.mark.parametrize("kind", ["jsonl-numbers", "jsonl-strings", "csv", "jsonl-floats"])
def test_integer_labels_sort_by_value_in_every_reader(folder, kind):
    root, rows = folder
    if kind == "csv":
        path = write_csv(root / "train.csv", _twelve_rows(rows, lambda k: str(k + 1)))  # "1".."12"
        expected = [str(k) for k in range(1, 13)]
    else:
        label_of = {"jsonl-numbers": int, "jsonl-strings": str, "jsonl-floats": float}[kind]
        path = write_jsonl(root / "train.jsonl", _twelve_rows(rows, label_of))
        expected = [str(k) for k in range(12)]
    _, labels = loaders_for(make_config(train=str(path)))
    assert labels == expected  # not "0", "1", "10", "11", "2", ...


def test_mixed_labels_keep_plain_string_order():
    from polymodal.data.manifest import sort_labels

    assert sort_labels(["b", "10", "a", "9"]) == ["10", "9", "a", "b"]
    assert sort_labels(["10", "-1", "2", "0"]) == ["-1", "0", "2", "10"]
    assert sort_labels(["02", "1", "10"]) == ["02", "1", "10"]  # "02" is a code, not an integer: text order


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_integral_float_joins_the_integer_class_with_a_warning(folder, suffix):
    root, rows = folder
    rows = [{**r, "label": lab} for r, lab in zip(rows, [1, 2.0, "2", " 1"])]
    if suffix == "csv":
        rows[1]["label"] = "2.0"  # what a spreadsheet / pandas export writes
        path = write_csv(root / "train.csv", rows)
    else:
        path = write_jsonl(root / "train.jsonl", rows)
    with pytest.warns(UserWarning, match=r"2\.0'? \(row 2\) and '2' \(row 3\) are read as label '2'"):
        _, labels = loaders_for(make_config(train=str(path)))
    assert labels == ["1", "2"]


def test_multilabel_lists_and_pipe_strings_are_normalised(folder):
    root, rows = folder
    rows = [{**r, "label": lab} for r, lab in zip(rows, [[1, 2.0], "1|2.0", ["3"], " 2 | 10"])]
    parsed = read_manifest(write_jsonl(root / "multi.jsonl", rows), make_config().model.modalities, task="multilabel")
    assert [row.label for row in parsed] == [["1", "2"], ["1", "2"], ["3"], ["2", "10"]]
    from polymodal.data.manifest import collect_labels

    assert collect_labels(parsed) == ["1", "2", "3", "10"]


@pytest.mark.filterwarnings("ignore:.*name the same class")
def test_configured_labels_are_normalised_and_collisions_refused(folder):
    from polymodal.config import Config, from_dict

    root, rows = folder
    rows = [{**r, "label": lab} for r, lab in zip(rows, [0, 1, 2, 2.0])]
    path = write_jsonl(root / "train.jsonl", rows)

    def config(labels):
        return from_dict(Config, {"model": {"modalities": MODALITIES, "head": {"labels": labels}},
                                  "data": {"batch_size": 2, "train": str(path)}})

    _, labels = loaders_for(config(["0", "1.0", " 2"]))
    assert labels == ["0", "1", "2"]
    with pytest.raises(DataError, match=r"model.head.labels: '2' and '2.0' are the same label '2'"):
        loaders_for(config(["0", "1", "2", "2.0"]))


def test_duplicate_ids_are_refused_naming_the_id_and_both_rows(folder):
    root, rows = folder
    rows[2]["id"] = rows[0]["id"]
    path = write_jsonl(root / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train.jsonl row 3: duplicate id 's0', already used by train.jsonl row 1"):
        loaders_for(make_config(train=str(path)))
    # `polymodal eval --data` reads a test split through the same validation
    with pytest.raises(DataError, match="duplicate id 's0'"):
        build_dataloaders(make_config(test=str(path)), build_processors(make_config().model.modalities),
                          splits=("test",))


def test_duplicate_ids_in_skip_mode_drop_the_later_row(folder):
    root, rows = folder
    rows[3]["id"] = rows[1]["id"]
    path = write_csv(root / "val.csv", rows)
    with pytest.warns(UserWarning, match=r"val.csv row 4: duplicate id 's1', already used by val.csv row 2"):
        loaders, _ = loaders_for(make_config(train=str(write_jsonl(root / "train.jsonl", rows[:3])), val=str(path),
                                             on_error="skip"))
    kept = loaders["val"].dataset.rows
    assert [r.id for r in kept] == ["s0", "s1", "s2"] and kept[1].inputs["caption"] == "sample 1"


def test_generated_ids_may_not_collide_with_given_ones(folder):
    root, rows = folder
    rows[0]["id"] = "3"  # row 3 has no id: it gets its row number, "3"
    rows[2].pop("id")
    path = write_jsonl(root / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"row 3: duplicate id '3', already used by train.jsonl row 1"):
        loaders_for(make_config(train=str(path)))
