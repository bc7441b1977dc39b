"""A new task is one file (+ its test): a regression task with an MSE objective, written here as a test fixture —
not a feature — to prove that the task layer takes one without touching polymodal's source.

What the fixture needs from polymodal: ``register_task_config`` (its config sections), ``@TASKS.register`` (the
task), ``models.persistence.write_model_dir`` / ``read_model_config`` (the one model directory format). What it
gets for free: ``RunConfig`` parsing with key-naming errors, ``recipes.train.train`` (Trainer, AdamW, schedules,
accumulation, NaN guard, atomic checkpoints, exact resume, best/, metrics.json), ``tasks.load_model`` by the
recorded task, and the import-direction contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from polymodal.config import (
    TASK_CONFIGS,
    ConfigError,
    RunConfig,
    TaskConfigSpec,
    bounds,
    from_dict,
    register_task_config,
)
from polymodal.models.persistence import WEIGHTS_NAME, read_model_config, write_model_dir
from polymodal.objectives.accumulation import LossTerm
from polymodal.recipes.train import train
from polymodal.registry import TASKS
from polymodal.tasks import PreparedData, Task, get_task, load_model, task_of
from polymodal.types import Batch, ModelOutput

NAME = "regression_fixture"


# ---------------------------------------------------------------------------------------------- the one file


@dataclass
class RegressionModelConfig:
    inputs: int = field(default=4, metadata=bounds(ge=1))
    hidden: int = field(default=16, metadata=bounds(ge=1))


class Regressor(nn.Module):
    task_name = NAME

    def __init__(self, config: RegressionModelConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.inputs, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(logits=self.net(batch.inputs["x"]["values"]).squeeze(-1))

    def parameter_counts(self) -> dict[str, float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable, "trainable_share": trainable / total}

    def save_pretrained(self, directory) -> Path:
        return write_model_dir(directory, NAME, self.config, self.state_dict())


class Rows(Dataset):
    """y = x · w + 0.1 noise, from a seed: a task whose loss must fall well below the target variance."""

    def __init__(self, size: int, inputs: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, inputs, generator=gen)
        self.y = self.x @ torch.linspace(-1.0, 1.0, inputs) + 0.1 * torch.randn(size, generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        rows = torch.tensor(indices)
        return Batch(inputs={"x": {"values": self.x[rows]}}, present={"x": torch.ones(len(rows), dtype=torch.bool)},
                     labels=self.y[rows], ids=[str(i) for i in indices])


class RegressionTask(Task):
    """scalar regression with a mean-squared-error objective (test fixture)"""

    name = NAME

    def build_model(self, config, labels):
        return Regressor(config.model)

    def load_model(self, directory, payload, map_location="cpu", *, trust_remote_code=False):
        model = Regressor(from_dict(RegressionModelConfig, payload["model"], "model"))
        model.load_state_dict(load_file(str(Path(directory) / WEIGHTS_NAME), device=map_location))
        return model.eval()

    def prepare_data(self, config, splits=("train", "val", "test"), processors=None):
        sizes, offsets = {"train": 96, "val": 32, "test": 32}, {"train": 0, "val": 1, "test": 2}
        loaders = {}
        for split in splits:
            rows = Rows(sizes[split], config.model.inputs, seed=config.train.seed + offsets[split])
            loaders[split] = DataLoader(rows, batch_size=config.data.batch_size, shuffle=split == "train",
                                        collate_fn=rows.collate)
        return PreparedData({}, loaders, [])

    def training_output(self, model, output, batch):
        error = (output.logits - batch.labels) ** 2
        output.loss_terms = {"mse": LossTerm(error.sum(), float(len(error)))}
        output.loss = error.mean()
        return output

    def loss_counts(self, model, batch):
        return {"mse": float(len(batch))}

    def validate(self, model, loader, device, autocast=None, config=None):
        return self.test_metrics(model, loader, config, device)

    @torch.no_grad()
    def test_metrics(self, model, loader, config, device="cpu", context=None):
        errors = torch.cat([model(b.to(device)).logits - b.labels for b in loader])
        return {"loss": float((errors**2).mean()), "mae": float(errors.abs().mean())}


# ---------------------------------------------------------------------------------------------- its test


@pytest.fixture
def registered():
    register_task_config(NAME, TaskConfigSpec(model=RegressionModelConfig, monitor=("val_loss", "min")))
    TASKS.register(NAME)(RegressionTask)
    yield
    del TASKS._entries[NAME], TASKS._descriptions[NAME]
    del TASK_CONFIGS[NAME]


def test_a_new_task_trains_saves_and_reloads_through_the_one_recipe(registered, tmp_path):
    config = from_dict(RunConfig, {"task": NAME, "model": {"inputs": 4, "hidden": 16},
                                   "data": {"batch_size": 16},
                                   "train": {"epochs": 15, "lr": 0.02, "progress": False, "log_every": 0,
                                             "out_dir": str(tmp_path / "run")}})
    assert config.train.monitor == "val_loss" and config.train.monitor_mode == "min"  # the task's default
    summary = train(config, verbose=False)
    # The target variance is Σ w² ≈ 2.2 (+ 0.01 noise); a trained regressor gets close to the 0.01 noise floor.
    assert summary["test"]["loss"] < 0.1 and summary["task"] == NAME
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["mae"] == summary["test"]["mae"]
    best = tmp_path / "run" / "best"
    assert read_model_config(best)["task"] == NAME  # the saved directory records its task
    model = load_model(best)  # dispatched on that record alone
    assert isinstance(model, Regressor) and task_of(model).name == NAME
    _, loaders, _ = get_task(NAME).prepare_data(config, splits=("test",))
    assert get_task(NAME).test_metrics(model, loaders["test"], config) == pytest.approx(summary["test"], rel=1e-6)


def test_a_new_tasks_config_errors_name_the_key(registered):
    with pytest.raises(ConfigError, match=r"model.hiden.*did you mean 'model.hidden'"):
        from_dict(RunConfig, {"task": NAME, "model": {"hiden": 3}})
    with pytest.raises(ConfigError, match=r"model.inputs: must be >= 1"):
        from_dict(RunConfig, {"task": NAME, "model": {"inputs": 0}})
    with pytest.raises(ConfigError, match=r"zeroshot: this section belongs to the alignment task"):
        from_dict(RunConfig, {"task": NAME, "zeroshot": {"classnames": ["a"]}})


def test_an_unregistered_task_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"task: unknown task 'regresion_fixture'"):
        from_dict(RunConfig, {"task": "regresion_fixture"})
