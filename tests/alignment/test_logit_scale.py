"""The logit-scale cap is a projection after each optimizer step (as open_clip's ``logit_scale.clamp_(0, ln 100)``
after ``optimizer.step()``), never a clamp in forward: the temperature's gradient is never silenced, the value
stays within the cap during training, and an initial value above the cap is refused naming the key."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from polymodal.config import AlignmentConfig, ConfigError, TrainConfig, from_dict
from polymodal.errors import PolymodalError
from polymodal.models import AlignmentModel
from polymodal.training import Trainer
from polymodal.types import Batch

CAP = math.log(100.0)
TOWER = {"kind": "text", "encoder": "text_transformer",
         "options": {"vocab_size": 50, "dim": 16, "depth": 1, "heads": 2, "dropout": 0.0, "max_positions": 8}}


def tiny_model(init: float | None = None, objectives=None) -> AlignmentModel:
    """Two small text towers ("left", "right") aligned with CLIP (or the given objectives)."""
    config = {"modalities": {"left": TOWER, "right": TOWER}, "embed_dim": 8}
    if init is not None:
        config["init_logit_scale"] = init
    if objectives is not None:
        config["objectives"] = objectives
    torch.manual_seed(0)
    return AlignmentModel(from_dict(AlignmentConfig, config, "alignment"))


def tiny_batch(n: int = 8) -> Batch:
    gen = torch.Generator().manual_seed(1)
    inputs = {}
    for name in ("left", "right"):
        ids = torch.randint(4, 50, (n, 6), generator=gen)
        inputs[name] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return Batch(inputs=inputs, present={m: torch.ones(n, dtype=torch.bool) for m in inputs},
                 ids=[f"s{i}" for i in range(n)])


class PushedUp(nn.Module):
    """The alignment loss minus the logit scale: gradient descent always pushes the scale up, into its cap."""

    def __init__(self, model: AlignmentModel):
        super().__init__()
        self.model = model
        self.after_steps: list[float] = []  # logit scale once each step's projection is done

    def forward(self, batch: Batch) -> SimpleNamespace:
        return SimpleNamespace(loss=self.model(batch).loss - 1000.0 * self.model.logit_scale)

    def clamp_parameters(self) -> None:
        self.model.clamp_parameters()
        self.after_steps.append(float(self.model.logit_scale))


@pytest.mark.parametrize("offset", [0.0, 1e-4, 0.5])  # at the cap and above it (e.g. a state loaded as is)
@pytest.mark.parametrize("objective", ["clip", "siglip"])
def test_logit_scale_gradient_is_not_silenced_at_or_above_the_cap(offset, objective):
    model = tiny_model(objectives=[{"name": objective}])
    with torch.no_grad():
        model.logit_scale.fill_(CAP + offset)
    model(tiny_batch()).loss.backward()
    assert model.logit_scale.grad is not None and abs(float(model.logit_scale.grad)) > 1e-6
    assert float(model.scale()) == pytest.approx(math.exp(CAP + offset), rel=1e-5)  # no clamp in forward


class Rows(Dataset):
    def __init__(self, batch: Batch):
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        rows = torch.tensor(indices)
        b = self.batch
        return Batch(inputs={m: {k: v[rows] for k, v in d.items()} for m, d in b.inputs.items()},
                     present={m: v[rows] for m, v in b.present.items()}, ids=[b.ids[i] for i in indices])


def test_trainer_projects_the_logit_scale_after_every_step(tmp_path):
    aligner = tiny_model(init=CAP - 0.05)
    model = PushedUp(aligner)
    data = Rows(tiny_batch())
    loader = DataLoader(data, batch_size=8, shuffle=False, collate_fn=data.collate)
    cfg = TrainConfig(epochs=12, lr=0.05, weight_decay=0.0, warmup_ratio=0.0, schedule="constant",
                      clip_grad_norm=None, device="cpu", progress=False, log_every=0)
    trainer = Trainer(model, cfg, loader, run_dir=tmp_path / "run")
    gradients, step = [], trainer.optimizer.step

    def record(*args, **kwargs):
        gradients.append(float(aligner.logit_scale.grad))
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    trainer.fit()
    after_steps = model.after_steps
    assert len(after_steps) == 12
    assert max(after_steps) <= CAP + 1e-7  # projected after every step
    assert float(aligner.logit_scale) == pytest.approx(CAP, abs=1e-6)  # it reached the cap and stays there
    assert all(g < 0 for g in gradients)  # at the cap the gradient still flows: it is never zeroed in forward


@pytest.mark.parametrize("init", [CAP + 1e-4, 4.6052, 10.0])
def test_initial_logit_scale_above_the_cap_is_a_config_error(init):
    with pytest.raises(ConfigError, match="init_logit_scale") as caught:
        tiny_model(init=init)
    assert isinstance(caught.value, PolymodalError)
    assert "logit_scale_max" in str(caught.value)


@pytest.mark.parametrize("init", [float("inf"), float("nan")])
def test_non_finite_initial_logit_scale_is_a_config_error(init):
    with pytest.raises(ConfigError, match="init_logit_scale"):
        tiny_model(init=init)


def test_a_lower_cap_than_the_default_initial_value_names_both_keys():
    config = {"modalities": {"left": TOWER, "right": TOWER}, "embed_dim": 8, "logit_scale_max": 2.0}
    with pytest.raises(ConfigError, match=r"init_logit_scale \(its default\).*logit_scale_max"):
        AlignmentModel(from_dict(AlignmentConfig, config, "alignment"))


def test_initial_value_at_the_cap_is_accepted_and_projection_keeps_it():
    model = tiny_model(init=CAP)
    model.clamp_parameters()
    assert float(model.logit_scale) == pytest.approx(CAP)


def test_loading_a_model_saved_above_the_cap_projects_it(tmp_path):
    """A checkpoint from when the cap was a clamp in forward may hold a value above it; forward then used the
    capped value, so loading projects it and the model's outputs stay what they were."""
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(CAP + 0.7)
    model.save_pretrained(tmp_path / "model")
    loaded = AlignmentModel.from_pretrained(tmp_path / "model")
    assert float(loaded.logit_scale) == pytest.approx(CAP)
    assert float(loaded.scale()) == pytest.approx(100.0, rel=1e-5)
