"""Every CLI verb answers a bad input with one line naming the cause (exit 2), a traceback only under --debug;
polymodal's warnings are one line too; `polymodal list` shows the fine-tuning strategies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polymodal.cli import listing, main
from polymodal.config import ConfigError
from polymodal.errors import PolymodalError

TINY = """
model:
  modalities:
    image: {kind: image, encoder: image_cnn, options: {channels: [4, 8]}, processor: {image_size: 8, channels: 1}}
  fusion: {name: concat, dim: 8}
data: {name: spoken-digits, limit: 20, batch_size: 10}
train: {epochs: 1, max_steps: 1, progress: false}
"""


def one_line_error(capsys, verb: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"polymodal {verb}: error: "), err
    return lines[0]


@pytest.mark.parametrize("args, verb, cause", [
    (["train", "{tmp}/missing.yaml"], "train", "missing.yaml' does not exist"),
    (["train", "{tmp}/tiny.yaml", "--set", "train.weight_decay=-5"], "train", "train.weight_decay: must be >= 0"),
    (["train", "{tmp}/tiny.yaml", "--set", "train.lr"], "train", "must look like section.key=value"),
    (["train", "{tmp}/tiny.yaml", "--finetune", "sideways"], "train", "finetune.default: 'sideways' is not one of"),
    (["eval", "{tmp}/no_run"], "eval", "no_run is neither a model directory"),
    (["eval"], "eval", "eval needs a run or model directory"),
    (["predict", "{tmp}/no_model", "--text", "seven"], "predict", "no_model is neither a model directory"),
    (["predict", "{tmp}"], "predict", "give at least one input"),
    (["export-data", "no-such-set", "--out", "{tmp}/x"], "export-data", "unknown dataset 'no-such-set'"),
    (["bench", "{tmp}/no_suite.yaml"], "bench", "bench suite"),
    (["retrieve", "index", "{tmp}/no_model", "--data", "spoken-digits", "--modality", "image", "--out", "{tmp}/i"],
     "retrieve", "no_model is neither a model directory"),
    (["retrieve", "query", "{tmp}/no_index", "--text", "seven"], "retrieve", "no_index"),
    (["demo", "--fusions", "concat,nosuch", "--out", "{tmp}/demo"], "demo", "--fusions: unknown fusion 'nosuch'"),
])
def test_every_verb_reports_a_bad_input_in_one_line(tmp_path, capsys, args, verb, cause):
    (tmp_path / "tiny.yaml").write_text(TINY)
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert cause in one_line_error(capsys, verb)
    assert not (tmp_path / "demo").exists()  # the demo refuses before training anything


@pytest.mark.parametrize("args", [["list", "nosuch"], ["predict", "x", "--top", "0"], ["demo", "--epochs", "0"],
                                  ["retrieve", "query", "x", "--top", "0"], ["nosuchverb"], ["train"]])
def test_usage_errors_are_one_line_too(capsys, args):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: " in err and "--help" in err


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "missing.yaml")
    for args in (["--debug", "train", missing], ["train", missing, "--debug"]):
        with pytest.raises(ConfigError, match="does not exist"):
            main(args)
    monkeypatch.setenv("POLYMODAL_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["train", missing])


@pytest.mark.parametrize("error, code, shown", [
    (type("DiskFull", (PolymodalError, OSError), {})("disk full writing run/best: free 2 GB and resume"), 2,
     "disk full writing run/best: free 2 GB and resume"),
    (type("Interrupted", (PolymodalError,), {"exit_code": 130})("stopped at step 5; resume with --resume"), 130,
     "stopped at step 5; resume with --resume"),
    (KeyError("model"), 2, "the entry 'model' is missing (KeyError)"),
    (KeyError("unknown modality 'x'; this model has ['image']"), 2, "unknown modality 'x'; this model has"),
    (ValueError("rows 3, 7 are broken:\n  row 3: bad\n  row 7: bad"), 2, "rows 3, 7 are broken:; row 3: bad; row 7"),
    (PermissionError(13, "Permission denied", "/root/run"), 2, "Permission denied: /root/run"),
    (ValueError(""), 2, "ValueError (no message)"),
])
def test_expected_errors_from_any_layer(monkeypatch, capsys, error, code, shown):
    def fail(args):
        raise error

    monkeypatch.setattr(listing, "run", fail)
    assert main(["list"]) == code
    assert shown in one_line_error(capsys, "list")


def test_ctrl_c_exits_130_without_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(listing, "run", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err.strip() == "polymodal list: interrupted"


def test_list_shows_fine_tuning_strategies(capsys):
    assert main(["list", "finetune"]) == 0
    out = capsys.readouterr().out
    for strategy in ("full", "frozen", "linear_probe", "lora", "loha", "lokr", "ia3", "prompt"):
        assert any(line.split()[0] == strategy and len(line.split()) > 4 for line in out.splitlines()[1:]
                   if line.strip()), strategy
    assert main(["list"]) == 0
    assert "finetune (--finetune STRATEGY" in capsys.readouterr().out


def test_train_warns_in_one_line_about_lora_on_random_encoders(tmp_path):
    """A subprocess, as users run it: the warning line names the encoder, the run still trains (exit 0)."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    done = subprocess.run([sys.executable, "-m", "polymodal", "train", "tiny.yaml", "--finetune", "lora", "--out",
                           "run"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                               "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    warned = [line for line in done.stderr.splitlines() if line.startswith("polymodal train: warning: ")]
    assert len(warned) == 1 and "lora freezes the weights of image (image_cnn)" in warned[0]
    assert "randomly initialised" in warned[0] and "finetune.encoders" in warned[0]
    assert "Traceback" not in done.stderr and "FinetuneWarning" not in done.stderr
