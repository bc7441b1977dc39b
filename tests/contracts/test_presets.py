"""Presets are data: YAML files under polymodal/presets/, one loader, listed by `polymodal list presets`.

The values must be exactly the Python dicts they replaced (so the demos' and CLIP's numbers do not move): the old
literals are copied here and compared field by field.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import polymodal.presets as presets
from polymodal.cli import main
from polymodal.config import Config, from_dict
from polymodal.encoders.clip_towers import CLIPNativeConfig
from polymodal.errors import PolymodalError
from polymodal.presets import PresetError, describe_presets, load_preset, preset_kinds, preset_names

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(presets.__file__).resolve().parent

# The dicts as they were in Python before they became files (alignment/clip_native.py, demo.py, finetune_demo.py;
# the demos are recipes/demos/classify.py and finetune.py now).
OLD_VIT_B_32 = dict(image_size=224, patch_size=32, num_channels=3, vision_width=768, vision_layers=12,
                    vision_heads=12, text_width=512, text_layers=12, text_heads=8, mlp_ratio=4.0, embed_dim=512,
                    vocab_size=49408, context_length=77, act="quick_gelu", layer_norm_eps=1e-5, text_pool="eos",
                    eos_token_id=49407, logit_scale_init=math.log(1 / 0.07), gradient_checkpointing=False)
OLD_TINY = {**OLD_VIT_B_32, **dict(image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=4,
                                   text_width=32, text_layers=2, text_heads=4, embed_dim=32, vocab_size=100,
                                   context_length=16, eos_token_id=99)}
OLD_DEMO_IMAGE = {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 16, "channels": 1}}
OLD_DEMO_AUDIO = {
    "kind": "audio",
    "encoder": "audio_transformer",
    "options": {"dim": 64, "depth": 2, "heads": 4},
    "processor": {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 40, "max_seconds": 1.0},
}
OLD_FINETUNE_AUDIO = {
    "kind": "audio",
    "encoder": "audio_transformer",
    "options": {"dim": 64, "depth": 2, "heads": 4},
    "processor": {"max_seconds": 1.0, "n_mels": 40},
}


def same_values(got, want) -> bool:
    """Equal values of equal types (1 and 1.0, or 1e-5 and the string '1e-5', are different presets)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same_values(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def test_clip_presets_give_the_old_configs_exactly():
    assert same_values(CLIPNativeConfig.vit_b_32().to_dict(), OLD_VIT_B_32)
    assert same_values(CLIPNativeConfig.tiny().to_dict(), OLD_TINY)
    assert CLIPNativeConfig.vit_b_32() == CLIPNativeConfig()  # the dataclass defaults are ViT-B/32 too
    assert CLIPNativeConfig.tiny(context_length=8, gradient_checkpointing=True).to_dict() == {
        **OLD_TINY, "context_length": 8, "gradient_checkpointing": True}


def test_demo_encoder_settings_are_the_old_dicts():
    from polymodal.recipes.demos import classify as demo
    from polymodal.recipes.demos import finetune as finetune_demo

    assert same_values(demo.IMAGE, OLD_DEMO_IMAGE) and same_values(demo.AUDIO, OLD_DEMO_AUDIO)
    assert same_values(finetune_demo.AUDIO, OLD_FINETUNE_AUDIO)
    # the whole demo config the recipe builds is unchanged
    built = demo.spoken_digits_config(["image", "audio"], "gated", 3, 7, "out", limit=50)
    old = from_dict(Config, {
        "model": {"modalities": {"image": OLD_DEMO_IMAGE, "audio": OLD_DEMO_AUDIO},
                  "fusion": {"name": "gated", "dim": 64}, "head": {"dropout": 0.1}},
        "data": {"name": "spoken-digits", "batch_size": 32, "limit": 50},
        "train": {"epochs": 3, "lr": 2e-3, "weight_decay": 0.01, "warmup_ratio": 0.05, "seed": 7, "progress": False,
                  "out_dir": "out"},
    })
    assert built == old
    finetune = finetune_demo.demo_config("out", 2, 0, 40, 1e-3)
    assert finetune.model.modalities["audio"] == from_dict(Config, {
        "model": {"modalities": {"audio": OLD_FINETUNE_AUDIO}}}).model.modalities["audio"]


def test_every_preset_loads_and_lists():
    table = describe_presets()
    assert set(table) == set(preset_kinds()) >= {"clip", "encoders"}
    assert {"tiny", "vit-b-32"} <= set(preset_names("clip"))
    assert {"demo-image", "demo-audio", "finetune-demo-audio"} <= set(preset_names("encoders"))
    for kind, names in table.items():
        for name, description in names.items():
            assert description.strip(), f"{kind}/{name} has no description"
            values = load_preset(kind, name)
            assert isinstance(values, dict) and values
            if kind == "clip":
                CLIPNativeConfig.from_preset(name)  # every field is a real config field with a valid value
            else:
                from_dict(Config, {"model": {"modalities": {"x": values}}})  # a valid modality spec


def test_load_preset_returns_a_fresh_copy():
    values = load_preset("encoders", "demo-audio")
    values["options"]["dim"] = 1
    assert load_preset("encoders", "demo-audio")["options"]["dim"] == 64


def test_unknown_kind_or_name_names_the_choices():
    with pytest.raises(PresetError, match=r"unknown clip preset 'vit-b-16'.*did you mean 'vit-b-32'.*tiny"):
        load_preset("clip", "vit-b-16")
    with pytest.raises(PresetError, match=r"unknown preset kind 'encoder'.*did you mean 'encoders'"):
        preset_names("encoder")
    err = pytest.raises(ValueError, CLIPNativeConfig.from_preset, "huge").value
    assert isinstance(err, PolymodalError) and "available: tiny, vit-b-32" in str(err)


def test_malformed_preset_files_are_named(tmp_path, monkeypatch):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "flat.yaml").write_text("image_size: 32\n")
    (tmp_path / "clip" / "broken.yaml").write_text("values: [1, 2\n")
    (tmp_path / "clip" / "typed.yaml").write_text("description: 3\nvalues: {}\n")
    (tmp_path / "clip" / "yaml12.yaml").write_text("description: d\nvalues: {eps: 1e-5, big: 1E6, cache: off}\n")
    monkeypatch.setattr(presets, "_root", lambda: tmp_path)
    presets._read.cache_clear()
    try:
        assert preset_names("clip") == ["broken", "flat", "typed", "yaml12"]
        # read like config files (YAML 1.2): exponents without a dot are numbers, off is a word
        assert same_values(load_preset("clip", "yaml12"), {"eps": 1e-5, "big": 1e6, "cache": "off"})
        with pytest.raises(PresetError, match=r"polymodal/presets/clip/flat.yaml: .*'description' and 'values'"):
            load_preset("clip", "flat")
        with pytest.raises(PresetError, match=r"clip/broken.yaml: not valid YAML"):
            load_preset("clip", "broken")
        with pytest.raises(PresetError, match=r"clip/typed.yaml: 'description' must be a string"):
            load_preset("clip", "typed")
    finally:
        presets._read.cache_clear()


def test_polymodal_list_shows_presets_connectors_and_the_clip_encoders(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert [s.split(":")[0].split(" (")[0] for s in sections] == [
        "tasks", "encoders", "fusions", "connectors", "heads", "objectives", "datasets", "finetune", "presets"]
    assert "  classification " in out and "  alignment " in out
    assert "  clip_vision " in out and "  clip_text " in out
    assert main(["list", "presets"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed == {f"{kind}/{name}" for kind, names in describe_presets().items() for name in names}


def test_pyproject_package_data_ships_every_preset_file():
    """The editable install reads src/; a wheel carries only what package-data names: every preset must match."""
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["polymodal"]
    files = [p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.yaml")]
    assert files
    for file in files:
        assert any(fnmatch.fnmatch(file, pattern) for pattern in globs), f"{file} is not in package-data {globs}"


@pytest.mark.slow
def test_a_built_wheel_contains_and_reads_the_presets(tmp_path):
    """Build the wheel from a copy of the project (setuptools writes build/ next to pyproject.toml) and load the
    presets from the installed copy in a fresh interpreter."""
    pytest.importorskip("setuptools")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(project)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("polymodal-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    names = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.yaml")}
    shipped = {p.relative_to(tmp_path / "site" / "polymodal" / "presets").as_posix()
               for p in (tmp_path / "site" / "polymodal" / "presets").rglob("*.yaml")}
    assert shipped == names
    code = ("import polymodal.presets as p, json; "
            "print(json.dumps([p.__file__, p.describe_presets(), p.load_preset('clip', 'tiny')]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    where, table, tiny = json.loads(run.stdout)
    assert where.startswith(str(tmp_path / "site")) and table == describe_presets()
    assert tiny == load_preset("clip", "tiny")
