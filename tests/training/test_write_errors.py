"""Full disk / quota / file-size limit while writing checkpoints: one DiskFullError line that says which limit ran
out and where, whatever library failed (Python, torch.save, safetensors); the previous checkpoint stays intact."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from run_fixtures import STEPS_PER_EPOCH, loaders, model, train_config
from safetensors import SafetensorError

from polymodal.errors import PolymodalError
from polymodal.training import Trainer, write_errors
from polymodal.training import checkpoint as checkpoint_module
from polymodal.training.checkpoint import is_complete_checkpoint, read_trainer_state
from polymodal.training.write_errors import DiskFullError, describe_write_error, translate_write_errors


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    "writer,failure",
    [
        ("save", enospc),  # torch.save → optimizer.pt
        ("save_model", enospc),  # safetensors → model.safetensors
    ],
)
def test_full_disk_at_the_second_checkpoint_keeps_the_first(tmp_path, monkeypatch, writer, failure):
    trainer = Trainer(model(), train_config(), *loaders(), run_dir=tmp_path)
    trainer.fit(stop_after_steps=STEPS_PER_EPOCH + 1)
    last = tmp_path / "checkpoints" / "last"
    good = {name: (last / name).read_bytes() for name in os.listdir(last)}
    target = checkpoint_module.torch if writer == "save" else checkpoint_module
    monkeypatch.setattr(target, writer, failure)
    with pytest.raises(DiskFullError) as caught:
        Trainer(model(), train_config(), *loaders(), run_dir=tmp_path).fit(resume=True)
    message = str(caught.value)
    assert isinstance(caught.value, PolymodalError) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ENOSPC and "\n" not in message
    assert message.startswith(f"could not write {last}: the disk is full (no space left on device)")
    assert f"the last complete checkpoint is kept at {last}" in message
    assert {name: (last / name).read_bytes() for name in os.listdir(last)} == good  # untouched
    assert not list(last.parent.glob(".last.*"))  # no partial temp directory left


def test_full_disk_on_the_first_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module.torch, "save", enospc)
    with pytest.raises(DiskFullError, match="no complete checkpoint had been written yet"):
        Trainer(model(), train_config(epochs=1), *loaders(), run_dir=tmp_path).fit()
    assert not (tmp_path / "checkpoints" / "last").exists()


def test_full_disk_while_logging_metrics_names_the_log(tmp_path, monkeypatch):
    from polymodal.training.logging import MetricLogger

    def full(self, row):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.jsonl_path))

    trainer = Trainer(model(), train_config(), *loaders(), run_dir=tmp_path)
    trainer.fit(stop_after_steps=STEPS_PER_EPOCH + 1)
    monkeypatch.setattr(MetricLogger, "log", full)
    with pytest.raises(DiskFullError) as caught:
        Trainer(model(), train_config(), *loaders(), run_dir=tmp_path).fit(resume=True)
    assert str(caught.value).startswith(f"could not write {tmp_path / 'metrics.jsonl'}: the disk is full")
    assert str(caught.value).endswith(f"the last good checkpoint is kept at {tmp_path / 'checkpoints' / 'last'}")
    assert read_trainer_state(tmp_path / "checkpoints" / "last")["global_step"] == STEPS_PER_EPOCH + 1


@pytest.mark.parametrize(
    "error,expected",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "quota is exhausted"),
        (OSError(errno.EFBIG, "File too large"), "file-size limit was hit"),
        (OSError(errno.EIO, "Input/output error"), "I/O error"),
        (SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                         'left on device" })'), "the disk is full"),
        (SafetensorError('Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too '
                         'large" })'), "file-size limit was hit"),
        (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                      "data/3: file write failed"), "disk is full or a file-size limit"),
    ],
)
def test_every_library_wording_is_recognised(tmp_path, monkeypatch, error, expected):
    monkeypatch.setattr(write_errors, "_guess_limit", lambda path: -1)  # this machine's limits do not matter
    translated = describe_write_error(error, tmp_path / "x.pt", kept="the last complete checkpoint is kept at y")
    assert translated is not None and expected in str(translated)
    assert str(translated).startswith(f"could not write {tmp_path / 'x.pt'}")
    assert str(translated).endswith("; the last complete checkpoint is kept at y")


def test_torch_short_write_is_attributed_to_the_file_size_limit(tmp_path, monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (3_000_000, resource.RLIM_INFINITY))
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 477696 vs 477584")
    assert "file-size limit was hit" in str(describe_write_error(error, tmp_path))


@pytest.mark.parametrize("error", [
    ValueError("bad value"),
    OSError(errno.ENOENT, "No such file", "/data/disk quota exceeded/no space left/x"),  # the path is no cause
    RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
    PolymodalError("training diverged at /runs/no space left/ (already a one-line user error)"),
])
def test_other_errors_pass_through(tmp_path, error):
    with pytest.raises(type(error)) as caught, translate_write_errors(tmp_path):
        raise error
    assert caught.value is error


# A real file-size limit (RLIMIT_FSIZE) in a child process: set below model.safetensors the limit hits safetensors,
# set between the two file sizes it hits torch.save's optimizer.pt; the checkpoint written before survives.
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from polymodal.training.checkpoint import save_checkpoint, is_complete_checkpoint, read_trainer_state
    from polymodal.training.write_errors import DiskFullError

    net = torch.nn.Linear(200, 200)  # 160 kB of weights; AdamW state makes optimizer.pt about twice that
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 200)).sum().backward()
    opt.step()
    results = []
    for limit, path in zip((100_000, 250_000), sys.argv[1:]):
        save_checkpoint(path, net, opt, None, None, {"epoch": 1})
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            save_checkpoint(path, net, opt, None, None, {"epoch": 2})
            result = {"error": None}
        except DiskFullError as err:
            result = {"error": str(err), "errno": err.errno, "cause": type(err.__cause__).__name__}
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        result["complete"] = is_complete_checkpoint(path)
        result["epoch"] = read_trainer_state(path)["epoch"]
        results.append(result)
    print(json.dumps(results))
    """
)


def test_real_file_size_limit_in_a_subprocess(tmp_path):
    paths = [tmp_path / "a" / "last", tmp_path / "b" / "last"]
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["cause"] for r in results] == ["SafetensorError", "RuntimeError"]  # safetensors, then torch.save
    for last, result in zip(paths, results):
        assert result["errno"] == errno.EFBIG
        assert result["error"].startswith(f"could not write {last}: a file-size limit was hit")
        assert f"the last complete checkpoint is kept at {last}" in result["error"]
        assert result["complete"] and result["epoch"] == 1
        assert is_complete_checkpoint(last) and read_trainer_state(last)["epoch"] == 1
        assert torch.load(last / "optimizer.pt", weights_only=True)["optimizer"]["state"]  # readable, not truncated
