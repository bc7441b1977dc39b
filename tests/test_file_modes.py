"""Everything polymodal writes gets the modes the user's umask gives a plain open() / mkdir, however it is
written: atomic temp-file writes, safetensors, temp-folder swaps (checkpoints, best/), whole runs and reports."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.files import (
    apply_plain_modes,
    atomic_save_safetensors,
    atomic_write_text,
    create_temp_file,
    current_umask,
    make_temp_dir,
    plain_modes,
)
from polymodal.training.checkpoint import atomic_directory

UMASKS = [0o022, 0o077, 0o002]


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def plain(tmp_path):
    """The modes a plain open() and mkdir give right now (the reference, measured, not computed)."""
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain_dir").mkdir()
    return mode(tmp_path / "plain.txt"), mode(tmp_path / "plain_dir")


def test_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # unchanged by reading
    assert plain_modes() == (0o666 & ~umask, 0o777 & ~umask)


def test_atomic_writes_get_plain_modes(tmp_path, umask):
    file_mode, dir_mode = plain(tmp_path)
    assert file_mode == 0o666 & ~umask
    atomic_write_text(tmp_path / "report.md", "# ünïcode ±\n")
    atomic_save_safetensors({"w": torch.ones(2, 3)}, tmp_path / "model.safetensors")
    assert mode(tmp_path / "report.md") == file_mode and mode(tmp_path / "model.safetensors") == file_mode
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == "# ünïcode ±\n"
    # overwriting an existing file keeps the umask's mode too (the temp file replaces it)
    atomic_write_text(tmp_path / "report.md", "again")
    assert mode(tmp_path / "report.md") == file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "plain.txt", "plain_dir", "report.md"]


def test_atomic_directory_gets_plain_modes_inside_and_out(tmp_path, umask):
    from safetensors.torch import save_model

    file_mode, dir_mode = plain(tmp_path)
    target = tmp_path / "run" / "checkpoints" / "last"
    for _ in range(2):  # first write, then a swap over the existing folder
        with atomic_directory(target) as tmp:
            save_model(torch.nn.Linear(2, 2), str(tmp / "model.safetensors"))  # safetensors alone writes 0600
            (tmp / "sub").mkdir()
            (tmp / "sub" / "state.json").write_text("{}")
    assert mode(target) == dir_mode and mode(target / "sub") == dir_mode
    assert mode(target / "model.safetensors") == file_mode and mode(target / "sub" / "state.json") == file_mode
    assert [p.name for p in target.parent.iterdir()] == ["last"]  # no temp folder left behind


def test_temp_helpers_and_symlinks(tmp_path, umask):
    file_mode, dir_mode = plain(tmp_path)
    fd, path = create_temp_file(tmp_path, prefix=".x.")
    os.close(fd)
    folder = make_temp_dir(tmp_path, prefix=".d.")
    assert mode(path) == file_mode and mode(folder) == dir_mode and path.name.startswith(".x.")
    secret = tmp_path / "secret"
    secret.write_text("s")
    os.chmod(secret, 0o600)
    (folder / "link").symlink_to(secret)
    os.chmod(folder, 0o700)
    apply_plain_modes(folder)
    assert mode(folder) == dir_mode and mode(secret) == 0o600  # a link's target is not touched


def test_saved_models_with_hf_artifacts(tmp_path, umask):
    from hf_fixtures import save_tiny_bert

    from polymodal.config import ModelConfig, from_dict
    from polymodal.models import MultimodalModel

    file_mode, dir_mode = plain(tmp_path)
    config = from_dict(ModelConfig, {"modalities": {"text": {"kind": "text", "pretrained": str(save_tiny_bert(
        tmp_path / "bert"))}}, "fusion": {"dim": 8}, "head": {"labels": ["a", "b"]}})
    out = tmp_path / "model"
    MultimodalModel(config).save_pretrained(out)
    written = [out, *out.rglob("*")]
    assert (out / "hf" / "text" / "tokenizer.json").is_file()  # written by Hugging Face, not by polymodal
    bad = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written
           if mode(p) != (dir_mode if p.is_dir() else file_mode)}
    assert bad == {}


@pytest.mark.parametrize("run_umask", [0o022, 0o077])
def test_train_and_eval_outputs_follow_the_umask(tmp_path, run_umask, capsys):
    from polymodal.cli import main

    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        rows.append({"id": f"r{i}", "image": f"img{i}.png", "text": f"digit {i % 2}", "label": str(i % 2)})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tiny.yaml").write_text(f"""
model:
  modalities:
    image: {{kind: image, encoder: image_cnn, options: {{channels: [4, 8]}}, processor: {{image_size: 8, channels: 1}}}}
    text: {{kind: text, options: {{dim: 16, depth: 1, heads: 2}}}}
  fusion: {{name: concat, dim: 8}}
data: {{train: {tmp_path / 'train.jsonl'}, batch_size: 4}}
train: {{epochs: 1, max_steps: 1, progress: false, out_dir: {tmp_path / 'run'}}}
""")
    old = os.umask(run_umask)
    try:
        assert main(["train", str(tmp_path / "tiny.yaml")]) == 0
        assert main(["eval", str(tmp_path / "run"), "--data", str(tmp_path / "train.jsonl"), "--out",
                     str(tmp_path / "ev"), "--no-robustness", "--no-efficiency", "--bootstrap", "0"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    file_mode, dir_mode = 0o666 & ~run_umask, 0o777 & ~run_umask
    written = [p for root in ("run", "ev") for p in [tmp_path / root, *(tmp_path / root).rglob("*")]]
    assert {"model.safetensors", "config.json", "report.html", "predictions.json"} <= {p.name for p in written}
    bad = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written
           if not p.is_symlink() and mode(p) != (dir_mode if p.is_dir() else file_mode)}
    assert bad == {}
