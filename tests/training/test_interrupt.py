"""Ctrl-C / SIGTERM: the first signal finishes the step in progress, writes a resumable mid-epoch checkpoint and
raises TrainingInterrupted (exit 130 / 143, the resume command in its one line); resuming from it gives the same
weights as an uninterrupted run; a second signal stops at once without a half-written checkpoint."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import torch
from run_fixtures import STEPS_PER_EPOCH, loaders, model, rows, train_config

from polymodal.cli import main
from polymodal.training import Trainer
from polymodal.training import checkpoint as checkpoint_module
from polymodal.training.checkpoint import _signals_held, is_complete_checkpoint, read_trainer_state
from polymodal.training.interrupt import TrainingInterrupted, resume_command


def signal_during_training_forward(net, at: int, signum: int = signal.SIGINT) -> dict:
    """Send ``signum`` to this process inside the ``at``-th training-mode forward (mid-step with accumulation);
    the returned dict's "sent" turns True then."""
    original, calls = net.forward, {"n": 0, "sent": False}

    def forward(batch):
        if net.training:
            calls["n"] += 1
            if calls["n"] == at:
                calls["sent"] = True
                os.kill(os.getpid(), signum)
        return original(batch)

    net.forward = forward
    return calls


@pytest.mark.parametrize("grad_accum,signal_at,step,batches_done", [(1, 7, 7, 2), (2, 8, 5, 4)])
def test_ctrl_c_checkpoints_mid_epoch_and_resume_is_exact(tmp_path, grad_accum, signal_at, step, batches_done):
    cfg = train_config(grad_accum=grad_accum, modality_dropout=0.3)
    straight = model()
    Trainer(straight, cfg, *loaders(), run_dir=tmp_path / "straight").fit()

    first = model()
    signal_during_training_forward(first, signal_at)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as caught:
        Trainer(first, cfg, *loaders(), run_dir=tmp_path / "resumed").fit()
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    err = caught.value
    assert err.exit_code == 130 and "\n" not in str(err)
    steps_total = 3 * -(-STEPS_PER_EPOCH // grad_accum)
    assert f"interrupted by SIGINT at epoch 2 ({batches_done}/5 batches), optimizer step {step}/{steps_total}" in str(err)
    assert "checkpoint saved to" in str(err) and "--resume" in str(err)
    state = read_trainer_state(tmp_path / "resumed" / "checkpoints" / "last")
    assert (state["epoch"], state["batches_done"], state["global_step"]) == (1, batches_done, step)
    before = rows(tmp_path / "resumed")

    second = model(seed=99)  # different init and global RNG: everything must come from the checkpoint
    Trainer(second, cfg, *loaders(), run_dir=tmp_path / "resumed").fit(resume=True)
    for (name, a), b in zip(straight.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    after = rows(tmp_path / "resumed")
    assert after[: len(before)] == before  # what was logged before the interrupt stays as it was
    assert [r["epoch"] for r in after if r["kind"] == "epoch"] == [0, 1, 2]
    straight_losses = [r["loss"] for r in rows(tmp_path / "straight") if r["kind"] == "step"]
    assert [r["loss"] for r in after if r["kind"] == "step"] == pytest.approx(straight_losses, abs=1e-6)


def test_sigterm_exits_143(tmp_path):
    net = model()
    signal_during_training_forward(net, 3, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="interrupted by SIGTERM at epoch 1 .*optimizer step 3") as caught:
        Trainer(net, train_config(), *loaders(), run_dir=tmp_path).fit()
    assert caught.value.exit_code == 143
    assert read_trainer_state(tmp_path / "checkpoints" / "last")["global_step"] == 3


def test_second_ctrl_c_during_the_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    net = model()
    Trainer(net, train_config(), *loaders(), run_dir=tmp_path).fit(stop_after_steps=STEPS_PER_EPOCH + 1)
    good = (tmp_path / "checkpoints" / "last" / "model.safetensors").read_bytes()
    real_save = torch.save

    def save_then_ctrl_c_again(*args, **kwargs):
        if first["sent"]:
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C lands in the middle of the write
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_ctrl_c_again)
    first = signal_during_training_forward(net, 2)  # epoch 2: the resumed run first ends epoch 1 (a save)
    with pytest.raises(TrainingInterrupted, match="stopped at once, nothing saved; the last good checkpoint is kept"):
        Trainer(net, train_config(), *loaders(), run_dir=tmp_path).fit(resume=True)
    last = tmp_path / "checkpoints" / "last"
    assert is_complete_checkpoint(last) and (last / "model.safetensors").read_bytes() == good
    assert read_trainer_state(last)["global_step"] == STEPS_PER_EPOCH + 1
    assert not list((tmp_path / "checkpoints").glob(".last.*"))  # no half-written temp directory left


def test_signals_are_held_back_during_the_checkpoint_swap():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append("handled"))
    try:
        with _signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            seen.append("renamed")
        assert seen == ["renamed", "handled"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_resume_command_repeats_the_cli_arguments(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/polymodal", "train", "cfg.yaml", "--set", "train.lr=0.1 x"])
    assert resume_command(tmp_path) == "polymodal train cfg.yaml --set 'train.lr=0.1 x' --resume"
    monkeypatch.setattr(sys, "argv", ["polymodal", "train", "cfg.yaml", "--resume"])
    assert resume_command(tmp_path) == "polymodal train cfg.yaml --resume"


def test_cli_exit_codes_for_interrupts(monkeypatch, capsys):
    from polymodal.cli import listing

    def interrupted(args):
        raise TrainingInterrupted("training interrupted by SIGINT at epoch 2: ...; continue with: polymodal train x "
                                  "--resume", signal.SIGINT)

    monkeypatch.setattr(listing, "run", interrupted)
    assert main(["list"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err

    def ctrl_c(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(listing, "run", ctrl_c)
    assert main(["list"]) == 130
    assert capsys.readouterr().err == "polymodal list: interrupted\n"


def test_ctrl_c_to_the_process_group_with_loader_workers(tmp_path, capfd):
    """Ctrl-C reaches the DataLoader workers too: they keep serving batches (the main process decides) and
    only the main process reports; the checkpoint is written at the step boundary as without workers."""
    import multiprocessing

    from run_fixtures import BatchRows
    from torch.utils.data import DataLoader

    rows_ = BatchRows(40, seed=1)
    train = DataLoader(rows_, batch_size=8, shuffle=True, collate_fn=rows_.collate, num_workers=1)
    net = model()
    original, calls = net.forward, {"n": 0}

    def forward(batch):
        if net.training:
            calls["n"] += 1
            if calls["n"] == 3:
                for child in multiprocessing.active_children():  # the loader's worker(s), as killpg would
                    os.kill(child.pid, signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
        return original(batch)

    net.forward = forward
    with pytest.raises(TrainingInterrupted, match=r"at epoch 1 \(3/5 batches\), optimizer step 3/15"):
        Trainer(net, train_config(), train, loaders()[1], run_dir=tmp_path).fit()
    assert read_trainer_state(tmp_path / "checkpoints" / "last")["global_step"] == 3
    assert capfd.readouterr().err.count("SIGINT received") == 1
