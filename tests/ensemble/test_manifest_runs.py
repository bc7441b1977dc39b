"""Ensembles of runs trained on manifests: fitting reads the validation manifest only (the test manifest may be
gone), and members that cannot be combined are refused with one line naming both runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.cli import main
from polymodal.ensemble import EnsembleModel
from polymodal.recipes.ensemble import build_ensemble

SIZES = {"train": 48, "val": 24, "test": 24}
RECIPE = """
model:
  modalities:
    image: {{kind: image, encoder: image_cnn, options: {{channels: [4, 8]}}, processor: {{image_size: {size}, channels: 1}}}}
  fusion: {{name: {fusion}, dim: 8}}
  head: {{dropout: 0.0, labels: {labels}}}
data: {{train: {root}/train.jsonl, val: {root}/val.jsonl, test: {root}/test.jsonl, batch_size: 16}}
train: {{epochs: 2, lr: 0.01, warmup_ratio: 0.0, progress: false, log_every: 0, seed: 0}}
"""


def write_images(root: Path) -> None:
    """8x8 grey images whose top or bottom half is bright (label top / bottom), three manifests."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, size in SIZES.items():
        rows = []
        for i in range(size):
            label = "top" if i % 2 == 0 else "bottom"
            pixels = rng.normal(0.3, 0.1, (8, 8))
            pixels[:4 if label == "top" else 8] += 0.5
            pixels[4:] -= 0.5 if label == "top" else 0.0
            name = f"images/{split}_{i}.png"
            Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(root / name)
            rows.append({"id": f"{split}{i}", "image": name, "label": label})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def train(root: Path, name: str, fusion: str = "concat", size: int = 8, labels=("bottom", "top")) -> Path:
    recipe = root / f"{name}.yaml"
    recipe.write_text(RECIPE.format(root=root, fusion=fusion, size=size, labels=json.dumps(list(labels))))
    assert main(["train", str(recipe), "--out", str(root / name)]) == 0
    return root / name


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest_task")
    write_images(root)
    return root, [train(root, "concat", "concat"), train(root, "gated", "gated")]


@pytest.mark.parametrize("method", ["weighted", "stack"])
def test_fitting_works_without_the_test_manifest(task, tmp_path, method):
    root, runs = task
    test_manifest = root / "test.jsonl"
    saved = test_manifest.read_text()
    test_manifest.unlink()  # any attempt to read a test row while fitting would now fail
    try:
        model = build_ensemble(runs, method)
    finally:
        test_manifest.write_text(saved)
    assert model.info["fitted_on"] == {"split": "val", "rows": SIZES["val"]}
    model.save_pretrained(tmp_path / "ens")
    assert main(["eval", str(tmp_path / "ens"), "--out", str(tmp_path / "eval"), "--no-robustness",
                 "--no-efficiency", "--bootstrap", "20"]) == 0
    assert 0.0 <= json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"] <= 1.0


def test_the_ensemble_directory_is_self_contained(task, tmp_path):
    import shutil

    root, runs = task
    copies = [shutil.copytree(run, tmp_path / run.name) for run in runs]
    model = build_ensemble(copies, "mean")
    model.save_pretrained(tmp_path / "ens")
    for copy in copies:  # the members' original runs may be deleted
        shutil.rmtree(copy)
    loaded = EnsembleModel.from_pretrained(tmp_path / "ens")
    batch = loaded.processors["image"].collate([loaded.processors["image"](root / "images/test_0.png")])
    from polymodal.types import Batch

    b = Batch(inputs={"image": batch}, present={"image": torch.tensor([True])}, ids=["0"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(b).logits, model(b).logits, atol=0, rtol=0)


def test_reordered_labels_are_refused(task, capsys):
    root, runs = task
    other = train(root, "reordered", labels=("top", "bottom"))
    capsys.readouterr()
    assert main(["ensemble", str(runs[0]), str(other), "--out", str(root / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(other) in err and str(runs[0]) in err
    assert "['top', 'bottom']" in err and "same label set in the same order" in err


def test_members_with_different_inputs_are_refused(task, capsys):
    root, runs = task
    other = train(root, "bigger", size=12)
    capsys.readouterr()
    assert main(["ensemble", str(runs[0]), str(other), "--out", str(root / "bad2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(other) in err and "processor options" in err


def test_explicit_val_and_test_manifests(task, tmp_path, capsys):
    root, runs = task
    out = tmp_path / "ens"
    assert main(["ensemble", *map(str, runs), "--method", "stack", "--val", str(root / "val.jsonl"),
                 "--test", str(root / "test.jsonl"), "--out", str(out)]) == 0
    report = json.loads((out / "ensemble_report.json").read_text())
    assert report["rows"] == SIZES["test"] and len(report["comparisons"]) == 2
    assert json.loads((out / "config.json").read_text())["fitted_on"] == {"split": "val", "rows": SIZES["val"]}


def test_members_without_recorded_data_need_a_val_manifest(task, tmp_path, capsys):
    from polymodal.models import MultimodalModel

    root, runs = task
    bare = []
    for run in runs:  # saved without the data section (e.g. built in Python): nothing says which rows to use
        model = MultimodalModel.from_pretrained(run / "best")
        model.data_config = None
        bare.append(model.save_pretrained(tmp_path / run.name))
    capsys.readouterr()
    assert main(["ensemble", *map(str, bare), "--method", "weighted", "--out", str(tmp_path / "x")]) == 2
    assert "pass --val MANIFEST" in capsys.readouterr().err
