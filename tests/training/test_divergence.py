"""Diverged runs: NaN at the first step, mid-epoch, during validation, and finite-loss runs whose weights or outputs
blew up. Each stops with one line naming epoch, step and samples; the kept checkpoint and best/ are always the last
state whose weights and outputs are finite; predict refuses a model with non-finite weights or outputs."""

from __future__ import annotations

import math

import pytest
import torch
from run_fixtures import STEPS_PER_EPOCH, loaders, model, train_config
from safetensors.torch import load_file

from polymodal.cli import main
from polymodal.config import ModelConfig, from_dict
from polymodal.errors import PolymodalError
from polymodal.inference import Predictor
from polymodal.inference.predictor import NonFiniteModelError
from polymodal.models import MultimodalModel
from polymodal.training import Trainer, TrainingDivergedError
from polymodal.training.checkpoint import is_complete_checkpoint, read_trainer_state
from polymodal.training.guards import nonfinite_outputs, nonfinite_weights
from polymodal.types import ModelOutput


def poison_training_call(net, at: int) -> None:
    """From the ``at``-th training-mode forward on, the logits (so the loss) are NaN (eval / probe forwards are left alone)."""
    original, calls = net.forward, {"n": 0}

    def forward(batch):
        out = original(batch)
        if not net.training:
            return out
        calls["n"] += 1
        # the task computes the loss from the logits: NaN logits give a NaN loss
        return ModelOutput(logits=out.logits * float("nan") if calls["n"] >= at else out.logits)

    net.forward = forward


def after_step(trainer: Trainer, step: int, action) -> None:
    """Run ``action(model)`` right after optimizer step ``step`` (1-based)."""
    original = trainer._optimizer_step

    def stepped(batch):
        original(batch)
        if trainer.state["global_step"] == step:
            with torch.no_grad():
                action(trainer.model)

    trainer._optimizer_step = stepped


def assert_kept_state_is_finite(run_dir, epochs_done: int) -> None:
    """checkpoints/last and best/ exist, are from the end of ``epochs_done`` and hold finite weights."""
    last = run_dir / "checkpoints" / "last"
    assert is_complete_checkpoint(last) and read_trainer_state(last)["epoch"] == epochs_done
    for path in (last / "model.safetensors", run_dir / "best" / "model.safetensors"):
        weights = load_file(path)
        assert all(torch.isfinite(t).all() for t in weights.values()), path
    reloaded = MultimodalModel.from_pretrained(run_dir / "best").eval()
    with torch.no_grad():
        assert nonfinite_outputs(reloaded(next(iter(loaders()[1])))) is None


def test_nan_at_the_first_step_keeps_nothing(tmp_path):
    net = model()
    poison_training_call(net, at=1)
    with pytest.raises(TrainingDivergedError) as caught:
        Trainer(net, train_config(), *loaders(), run_dir=tmp_path).fit()
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, PolymodalError)
    assert "loss became nan at epoch 1, optimizer step 1 (batch samples s" in message
    assert "no checkpoint had been written yet" in message
    assert not (tmp_path / "checkpoints" / "last").exists() and not (tmp_path / "best").exists()


def test_a_fresh_run_that_diverges_leaves_no_results_of_the_previous_run(tmp_path):
    Trainer(model(), train_config(epochs=1), *loaders(), run_dir=tmp_path).fit()
    (tmp_path / "metrics.json").write_text("{}")  # what pipeline.train writes after a run
    assert (tmp_path / "best").is_dir()
    net = model(seed=1)
    poison_training_call(net, at=1)
    with pytest.raises(TrainingDivergedError, match="no checkpoint had been written yet"):
        Trainer(net, train_config(), *loaders(), run_dir=tmp_path).fit()
    # Nothing of the earlier run may pass for this one's result (predict would use best/).
    assert not any((tmp_path / name).exists() for name in ("best", "metrics.json", "checkpoints/last"))


def test_nan_mid_epoch_keeps_the_last_finite_epoch(tmp_path):
    net = model()
    poison_training_call(net, at=STEPS_PER_EPOCH + 3)  # epoch 2, third batch
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, optimizer step 8 \(batch samples "
                                                    r"s\d+, .*last good checkpoint is kept at .*checkpoints/last"):
        Trainer(net, train_config(), *loaders(), run_dir=tmp_path).fit()
    assert_kept_state_is_finite(tmp_path, epochs_done=1)
    # best/ is exactly the epoch-1 weights the checkpoint holds.
    last, best = load_file(tmp_path / "checkpoints/last/model.safetensors"), load_file(tmp_path / "best/model.safetensors")
    assert all(torch.equal(last[k], best[k]) for k in best)


def test_nan_during_validation_keeps_the_previous_best(tmp_path):
    calls = {"n": 0}

    def evaluate(model_, loader, device):
        calls["n"] += 1
        return {"loss": float("nan") if calls["n"] == 2 else 1.0 / calls["n"]}

    trainer = Trainer(model(), train_config(), *loaders(), run_dir=tmp_path, evaluate_fn=evaluate)
    with pytest.raises(TrainingDivergedError, match=r"validation gave val_loss nan at epoch 2, optimizer step 10"):
        trainer.fit()
    assert_kept_state_is_finite(tmp_path, epochs_done=1)


def test_nan_weight_after_a_finite_loss_is_never_saved(tmp_path):
    train, _ = loaders()
    trainer = Trainer(model(), train_config(), train, run_dir=tmp_path)  # no validation: best by train loss
    after_step(trainer, 2 * STEPS_PER_EPOCH, lambda m: m.fusion.gate.weight.fill_(float("nan")))
    with pytest.raises(TrainingDivergedError, match=r"the weight fusion.gate.weight became non-finite at epoch 2, "
                                                    r"optimizer step 10 \(last batch samples s\d+"):
        trainer.fit()
    assert_kept_state_is_finite(tmp_path, epochs_done=1)


def test_finite_but_exploded_weights_are_caught_by_their_outputs(tmp_path):
    """The case of lr=1e6: weights finite (~1e38) but the next forward overflows; best/ must not keep them."""
    train, _ = loaders()
    trainer = Trainer(model(), train_config(), train, run_dir=tmp_path)

    def explode(m):
        m.head.net[1].weight.fill_(3e38)
        m.head.net[1].bias.fill_(3e38)

    after_step(trainer, STEPS_PER_EPOCH, explode)  # the last step of epoch 1: its loss was still finite
    with pytest.raises(TrainingDivergedError, match=r"output .* became non-finite .* at epoch 1, optimizer step 5 "
                                                    r".*no checkpoint had been written yet"):
        trainer.fit()
    assert nonfinite_weights(trainer.model) is None  # the weights alone looked fine
    assert not (tmp_path / "best").exists() and not (tmp_path / "checkpoints" / "last").exists()


def test_huge_learning_rate_keeps_only_finite_models(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"training diverged: .* at epoch \d+, optimizer step \d+"):
        Trainer(model(), train_config(lr=1e6, warmup_ratio=0.0), *loaders(), run_dir=tmp_path).fit()
    if (tmp_path / "best").exists():
        assert_kept_state_is_finite(tmp_path, read_trainer_state(tmp_path / "checkpoints" / "last")["epoch"])


def test_probe_leaves_rng_and_mode_untouched(tmp_path):
    from polymodal.training.guards import probe_outputs

    net = model().train()
    batch = next(iter(loaders()[0]))
    before = torch.get_rng_state()
    assert probe_outputs(net, batch) is None
    assert net.training and torch.equal(before, torch.get_rng_state())


# ---------------------------------------------------------------------------------------------- predict

TEXT = {"caption": {"kind": "text", "processor": {"max_length": 12, "vocab_size": 512}}}


def text_model(tmp_path, name, corrupt) -> str:
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"modalities": TEXT, "fusion": {"name": "concat", "dim": 8},
                                     "head": {"labels": ["a", "b", "c"]}})
    net = MultimodalModel(config)
    with torch.no_grad():
        corrupt(net)
    net.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


def test_predict_refuses_non_finite_weights_and_outputs(tmp_path, capsys):
    nan_weight = text_model(tmp_path, "nan", lambda m: next(m.head.parameters()).view(-1)[0].fill_(float("nan")))
    with pytest.raises(NonFiniteModelError, match=r"weight head\..* holds NaN/inf"):
        Predictor(nan_weight)

    def explode(m):
        last = [p for p in m.head.parameters()]
        for p in last:
            p.fill_(3e38)

    exploded = text_model(tmp_path, "exploded", explode)
    predictor = Predictor(exploded)  # finite weights: loads
    with pytest.raises(NonFiniteModelError, match="gave non-finite outputs"):
        predictor.predict(text="a small red ball")
    capsys.readouterr()
    assert main(["predict", exploded, "--text", "a small red ball", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "non-finite outputs" in captured.err
    healthy = Predictor(text_model(tmp_path, "ok", lambda m: None)).predict(text="a small red ball")
    assert all(math.isfinite(p) for p in healthy.probabilities.values())
