"""Trainer: exact resume, NaN guard, best model / early stopping, logs, accumulation, schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from run_fixtures import loaders, model, train_config  # shared with the run-safety tests

from polymodal.config import ConfigError
from polymodal.models import MultimodalModel
from polymodal.training import Trainer, TrainingDivergedError
from polymodal.types import ModelOutput


def step_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row["kind"] == "step"]


@pytest.mark.parametrize("stop_at,grad_accum,dropout_p", [(3, 1, 0.0), (7, 1, 0.3), (2, 2, 0.3)])
def test_resume_continues_exactly(tmp_path, stop_at, grad_accum, dropout_p):
    cfg = train_config(grad_accum=grad_accum, modality_dropout=dropout_p)
    train, val = loaders()
    straight = model()
    Trainer(straight, cfg, train, val, run_dir=tmp_path / "straight").fit()

    first = model()
    result = Trainer(first, cfg, *loaders(), run_dir=tmp_path / "resumed").fit(stop_after_steps=stop_at)
    assert result["interrupted"] and result["global_step"] == stop_at
    second = model(seed=99)  # different init and global RNG: everything must come from the checkpoint
    Trainer(second, cfg, *loaders(), run_dir=tmp_path / "resumed").fit(resume=True)

    for (name, a), b in zip(straight.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    straight_curve, resumed_curve = step_losses(tmp_path / "straight"), step_losses(tmp_path / "resumed")
    assert len(straight_curve) == len(resumed_curve) == math.ceil(5 / grad_accum) * 3
    assert resumed_curve == pytest.approx(straight_curve, abs=1e-6)


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    train, val = loaders()
    net = model()
    trainer = Trainer(net, train_config(epochs=4), train, val, run_dir=tmp_path)
    trainer.fit(stop_after_steps=5)  # one full epoch + a checkpoint
    good = (tmp_path / "checkpoints" / "last" / "model.safetensors").read_bytes()
    calls = {"n": 0}
    original = net.forward

    def poisoned(batch):
        calls["n"] += 1
        out = original(batch)
        # the task computes the loss from the logits: NaN logits give a NaN loss
        return ModelOutput(logits=out.logits * float("nan") if calls["n"] > 2 else out.logits)

    net.forward = poisoned
    with pytest.raises(TrainingDivergedError, match=r"loss became nan.*last good checkpoint is kept"):
        Trainer(net, train_config(epochs=4), *loaders(), run_dir=tmp_path).fit(resume=True)
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").read_bytes() == good


def test_best_model_early_stopping_and_logs(tmp_path):
    train, val = loaders()
    net = model()
    cfg = train_config(epochs=30, lr=0.05, early_stopping_patience=2, monitor="val_accuracy", monitor_mode="max")
    result = Trainer(net, cfg, train, val, run_dir=tmp_path).fit()
    epochs = [row for row in result["history"]]
    assert result["stopped_early"] and len(epochs) < 30
    best = max(row["val_accuracy"] for row in epochs)
    assert result["best_metric"] == best
    # Stopped exactly `patience` epochs after the last improvement.
    last_improvement = max(i for i, row in enumerate(epochs) if row["best"])
    assert len(epochs) - 1 - last_improvement == 2
    reloaded = MultimodalModel.from_pretrained(tmp_path / "best")
    from polymodal.evaluation import evaluate_classifier

    assert evaluate_classifier(reloaded, val)["accuracy"] == pytest.approx(result["best_metric"])
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,epoch,step") and len(csv_lines) == 1 + len(epochs) + result["global_step"]


def test_fresh_run_in_used_directory_starts_a_new_log(tmp_path):
    for _ in range(2):
        Trainer(model(), train_config(epochs=1), *loaders(), run_dir=tmp_path).fit()
    assert len(step_losses(tmp_path)) == 5


def test_schedule_warmup_then_cosine_to_zero(tmp_path):
    train, _ = loaders()
    trainer = Trainer(model(), train_config(epochs=2, warmup_ratio=0.2, lr=1e-2), train, run_dir=tmp_path)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["lr"] for row in rows if row["kind"] == "step"]  # the lr after each of the 10 steps
    assert lrs[0] == pytest.approx(0.5e-2)  # 2 warmup steps: 1/2 of the peak after the first
    assert lrs[1] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert trainer.monitor == "train_loss"  # no validation data: best = lowest training loss


def test_configuration_errors_name_the_key(tmp_path):
    train, val = loaders()
    with pytest.raises(ConfigError, match="train.grad_accum"):
        Trainer(model(), train_config(grad_accum=0), train, val, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="train.precision"):
        Trainer(model(), train_config(precision="fp16", device="cpu"), train, val, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"train.monitor: 'val_bleu' is not a logged metric; available: .*val_accuracy"):
        Trainer(model(), train_config(epochs=1, monitor="val_bleu"), train, val, run_dir=tmp_path).fit()
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        Trainer(model(), train_config(), train, val, run_dir=tmp_path / "empty").fit(resume=True)


def test_frozen_parameters_stay_bit_identical(tmp_path):
    net = model()
    net.encoders["image"].freeze()
    before = {k: v.clone() for k, v in net.encoders["image"].state_dict().items()}
    Trainer(net, train_config(epochs=1), *loaders(), run_dir=tmp_path).fit()
    after = net.encoders["image"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
