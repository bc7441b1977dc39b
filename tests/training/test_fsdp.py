"""FSDP (``train.strategy: fsdp``, PyTorch FSDP2 ``fully_shard``) on 2 CPU gloo ranks, against one process.

A tiny float64 two-encoder model (so sharding has units below the root, and one-process vs 2-rank numbers agree
to ~1e-12, far inside the bounds):
- one FSDP optimizer step on 2 ranks (each its half of an 8-row batch) equals one process on the whole batch;
  with grad_accum 2 too (the no_sync path);
- a sharded checkpoint (torch.distributed.checkpoint) saved on 2 ranks loads in 1 plain process and gives the
  predictions the 2-rank model gives; best/ is an ordinary model directory;
- a 2-rank run stopped after one step and resumed on 2 ranks ends with the uninterrupted run's weights;
- resuming across world sizes (2 ranks → 1 process, 1 process → 2 ranks) with the same global batch ends with
  the uninterrupted one-process run's weights.
Spawning reuses the DDP tests' helper (torchrun environment, polymodal's own init_distributed, a deadline).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed"))

from ddp_helpers import (  # noqa: E402
    aligner,
    classifier,
    loader,
    max_difference,
    rows,
    spawn,
    train_config,
    weights,
)

from polymodal.config import ConfigError, TrainConfig, from_dict  # noqa: E402
from polymodal.training import Trainer, fsdp  # noqa: E402
from polymodal.training.checkpoint import is_complete_checkpoint, load_checkpoint  # noqa: E402

ROWS = 8


# ---------------------------------------------------------------------------------------------- tiny model / data


@dataclass
class ToyBatch:
    x: torch.Tensor  # [B, 6]: features 0-2 for encoder "a", 3-5 for encoder "b"
    y: torch.Tensor  # [B] class index

    def to(self, device) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class ToyOutput:
    logits: torch.Tensor  # [B, 3]
    loss: torch.Tensor


class ToyRows(Dataset):
    def __init__(self, size: int = ROWS, seed: int = 1):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, 6, generator=generator, dtype=torch.float64)
        self.y = torch.randint(0, 3, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> ToyBatch:
        rows = torch.tensor(indices)
        return ToyBatch(self.x[rows], self.y[rows])


class TwoEncoders(nn.Module):
    """Two encoders (each its own FSDP unit) → concatenation → head × a 0-d temperature (FSDP2 cannot shard 0-d
    parameters: it stays whole, its gradient averaged by polymodal's hook); batch-mean cross-entropy loss."""

    def __init__(self, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoders = nn.ModuleDict({"a": nn.Linear(3, 8), "b": nn.Linear(3, 8)})
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(16, 3)
        self.temperature = nn.Parameter(torch.tensor(1.5))
        self.double()

    def forward(self, batch: ToyBatch) -> ToyOutput:
        a = torch.tanh(self.encoders["a"](batch.x[:, :3]))
        b = torch.tanh(self.encoders["b"](batch.x[:, 3:]))
        logits = self.head(self.dropout(torch.cat([a, b], dim=-1))) * self.temperature
        return ToyOutput(logits, nn.functional.cross_entropy(logits, batch.y))


def toy_loader(batch_size: int, shuffle: bool = False, size: int = ROWS, seed: int = 1) -> DataLoader:
    rows = ToyRows(size, seed)
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, collate_fn=rows.collate)


def toy_config(**overrides) -> TrainConfig:
    options = dict(epochs=1, lr=1e-2, warmup_ratio=0.0, progress=False, log_every=1, seed=3, device="cpu",
                   monitor="train_loss", monitor_mode="min", strategy="fsdp")
    options.update(overrides)
    return TrainConfig(**options)


def probe_inputs() -> ToyBatch:
    return ToyRows(5, seed=9).collate(list(range(5)))


def plain_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full weights: gathered from the shards under FSDP (a collective), the state dict otherwise."""
    if fsdp.is_sharded(model):
        return fsdp.full_state_dict(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def predictions(model: nn.Module) -> torch.Tensor:
    model.eval()
    return model(probe_inputs()).logits


# ---------------------------------------------------------------------------------------------- rank functions


def _one_step(rank: int, out: str, batch_size: int, grad_accum: int) -> None:
    model = TwoEncoders()
    trainer = Trainer(model, toy_config(max_steps=1, grad_accum=grad_accum), toy_loader(batch_size),
                      run_dir=f"{out}/run", verbose=False)
    assert fsdp.is_sharded(trainer.model) and len(fsdp.shard_units(model)) == 2
    trainer.fit()
    state = plain_weights(model)
    if rank == 0:
        torch.save(state, f"{out}/fsdp.pt")


def _gradients(rank: int, out: str, batch_size: int) -> None:
    """One step's gradients through the trainer's sharded forward: 4 rows per rank, as 4 // batch_size
    micro-batches (all but the last inside no_sync), each loss weighted by its share."""
    from torch.distributed.tensor import DTensor

    model = TwoEncoders()
    trainer = Trainer(model, toy_config(max_steps=1), toy_loader(batch_size), run_dir=f"{out}/run", verbose=False)
    batches = iter(trainer.train_loader)
    micro = 4 // batch_size
    for index in range(micro):
        sync = index == micro - 1
        with contextlib.nullcontext() if sync else trainer.forward_model.no_sync():
            (trainer.forward_model(next(batches)).loss / micro).backward()
    grads = {name: p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad.clone()
             for name, p in model.named_parameters()}
    if rank == 0:
        torch.save(grads, f"{out}/grads.pt")


def _train_and_predict(rank: int, out: str) -> None:
    """2 epochs of 2 steps with validation: best/ and a sharded last checkpoint; then the 2-rank predictions."""
    model = TwoEncoders()
    cfg = toy_config(epochs=2, monitor="val_loss", monitor_mode="min")
    summary = Trainer(model, cfg, toy_loader(2, shuffle=True), val_loader=toy_loader(3, seed=2, size=7),
                      run_dir=f"{out}/run", verbose=False).fit()
    logits = predictions(model)  # an FSDP forward: both ranks run it
    if rank == 0:
        torch.save({"logits": logits, "history": summary["history"]}, f"{out}/fsdp_predictions.pt")


def _fit(rank: int, out: str, run: str, batch_size: int, resume: bool, stop_after_steps: int | None,
         dropout: float) -> None:
    model = TwoEncoders(dropout=dropout)
    cfg = toy_config(epochs=2)
    Trainer(model, cfg, toy_loader(batch_size, shuffle=True), run_dir=f"{out}/{run}", verbose=False).fit(
        resume=resume, stop_after_steps=stop_after_steps)
    state = plain_weights(model)
    if rank == 0:
        torch.save(state, f"{out}/{run}.pt")


def _fit_one_process(out: Path, run: str, resume: bool = False, stop_after_steps: int | None = None):
    model = TwoEncoders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(model, toy_config(epochs=2), toy_loader(4, shuffle=True), run_dir=out / run, verbose=False)
        trainer.fit(resume=resume, stop_after_steps=stop_after_steps)
    return model, trainer, [str(w.message) for w in caught]


# ---------------------------------------------------------------------------------------------- fast tests


def test_strategy_is_validated_and_defaults_to_ddp():
    assert TrainConfig().strategy == "ddp"
    assert from_dict(TrainConfig, {"strategy": "fsdp"}, "train").strategy == "fsdp"
    with pytest.raises(ConfigError, match=r"train\.strategy.*'zero'.*ddp.*fsdp"):
        from_dict(TrainConfig, {"strategy": "zero"}, "train")


def test_fully_shard_is_available_in_the_installed_torch():
    assert fsdp.fully_shard_available()


def test_shard_units_are_the_encoders():
    model = TwoEncoders()
    assert fsdp.shard_units(model) == [model.encoders["a"], model.encoders["b"]]
    assert fsdp.shard_units(nn.Linear(2, 2)) == []  # no encoders: the root is the only unit


def test_fsdp_on_one_process_trains_as_usual_and_warns(tmp_path):
    model, trainer, messages = _fit_one_process(tmp_path, "single")
    assert not fsdp.is_sharded(trainer.model) and trainer.forward_model is model
    assert sum("fsdp on a single process" in m for m in messages) == 1
    last = tmp_path / "single" / "checkpoints" / "last"
    assert (last / "model.safetensors").is_file() and not fsdp.is_sharded_checkpoint(last)
    assert trainer.state["global_step"] == 4


def test_incomplete_sharded_checkpoint_names_the_missing_file(tmp_path):
    last = tmp_path / "last"
    (last / fsdp.SHARDED_DIR).mkdir(parents=True)
    (last / fsdp.SHARDED_DIR / ".metadata").write_bytes(b"")
    (last / "trainer_state.json").write_text("{}")
    assert not is_complete_checkpoint(last)
    with pytest.raises(FileNotFoundError, match="incomplete.*extra.pt"):
        load_checkpoint(last, TwoEncoders())


def _trained(steps: int = 2, seed: int = 0):
    """(model, AdamW, LR schedule) after ``steps`` steps."""
    model = TwoEncoders(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for batch in list(toy_loader(4))[:steps]:
        model(batch).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_sharded_format_round_trips_in_one_process(tmp_path):
    """The sharded writer and reader also run without a process group (one rank holding every shard): the
    layout, atomic replacement of the previous checkpoint, weights and AdamW state come back exactly."""
    model, optimizer, scheduler = _trained()
    last = tmp_path / "last"
    fsdp.save_sharded_checkpoint(last, *_trained(1), None, {"global_step": 1})
    fsdp.save_sharded_checkpoint(last, model, optimizer, scheduler, None, {"global_step": 2, "batches_done": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # the old one and the temp directory are gone
    assert sorted(p.name for p in last.iterdir()) == ["extra.pt", "sharded", "trainer_state.json"]
    assert (last / "sharded" / "__0_0.distcp").is_file() and is_complete_checkpoint(last)

    other, other_optimizer, other_scheduler = _trained(steps=1, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same world size (1): no re-sharding warning, no DCP warning
        state = load_checkpoint(last, other, other_optimizer, other_scheduler, restore_rng=False)
    assert state["global_step"] == 2 and "world_size" not in state and "strategy" not in state
    assert max_difference(plain_weights(other), plain_weights(model)) == 0.0
    for name, param in model.named_parameters():
        mine, theirs = optimizer.state[param], other_optimizer.state[dict(other.named_parameters())[name]]
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"]) and float(mine["step"]) == float(theirs["step"])
    assert other_scheduler.state_dict()["last_epoch"] == 2 and other_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_sharded_checkpoint_of_another_model_is_refused_naming_it(tmp_path):
    model, optimizer, _ = _trained()
    fsdp.save_sharded_checkpoint(tmp_path / "last", model, optimizer, None, None, {"global_step": 2})
    wider = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"last/sharded does not fit this model"):
        load_checkpoint(tmp_path / "last", wider, restore_rng=False)


def test_a_full_disk_while_writing_shards_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from torch.distributed.checkpoint import filesystem

    from polymodal.training.write_errors import DiskFullError

    model, optimizer, _ = _trained()
    last = tmp_path / "last"
    fsdp.save_sharded_checkpoint(last, model, optimizer, None, None, {"global_step": 2})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filesystem.FileSystem, "create_stream", full)
    with pytest.raises(DiskFullError, match=r"disk is full.*last complete checkpoint is kept"):
        fsdp.save_sharded_checkpoint(last, model, optimizer, None, None, {"global_step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp directory left behind
    assert json.loads((last / "trainer_state.json").read_text())["global_step"] == 2


# ---------------------------------------------------------------------------------------------- 2 ranks


@pytest.mark.slow
@pytest.mark.parametrize("batch_size, grad_accum", [(4, 1), (2, 2)])
def test_one_fsdp_step_equals_one_process_on_the_concatenated_batch(tmp_path, batch_size, grad_accum):
    """Rank 0 reads rows 0, 2, 4, 6 and rank 1 rows 1, 3, 5, 7: their union is the one process's batch of 8."""
    initial = plain_weights(TwoEncoders())
    single = TwoEncoders()
    Trainer(single, toy_config(max_steps=1, strategy="ddp"), toy_loader(8), run_dir=tmp_path / "single",
            verbose=False).fit()
    expected = plain_weights(single)
    spawn(_one_step, str(tmp_path), batch_size, grad_accum)
    got = torch.load(tmp_path / "fsdp.pt")
    assert max_difference(expected, initial) > 5e-3  # the step moved the weights (AdamW: ~lr)
    assert max_difference(got, expected) < 1e-5


def _aligner_step(rank: int, out: str) -> None:
    model = aligner()
    Trainer(model, train_config(max_steps=1, strategy="fsdp"), loader(rows(8), 4, shuffle=False),
            run_dir=f"{out}/run", verbose=False).fit()
    state = plain_weights(model)
    if rank == 0:
        torch.save(state, f"{out}/fsdp.pt")


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [4, 2])
def test_fsdp_gradients_are_the_one_process_gradients_of_the_concatenated_batch(tmp_path, batch_size):
    """Checked on the gradients themselves: AdamW's first step is lr·sign(g), blind to a mis-scaled gradient (a
    sum instead of a mean over ranks, the 0-d temperature's hook)."""
    single = TwoEncoders()
    single(next(iter(toy_loader(8)))).loss.backward()
    spawn(_gradients, str(tmp_path), batch_size)
    got = torch.load(tmp_path / "grads.pt")
    expected = {name: p.grad for name, p in single.named_parameters()}
    assert float(expected["temperature"].abs()) > 1e-3
    assert max_difference(got, expected) < 1e-10


@pytest.mark.slow
def test_one_fsdp_step_of_a_clip_aligner_equals_one_process(tmp_path):
    """A real model: image + text towers (one unit each), the 0-d logit scale, the CLIP loss gathered across ranks
    (row 7 lacks text: the ranks hold 4 and 3 pairs)."""
    initial = weights(aligner())
    single = aligner()
    Trainer(single, train_config(max_steps=1), loader(rows(8), 8, shuffle=False), run_dir=tmp_path / "single",
            verbose=False).fit()
    expected = weights(single)
    spawn(_aligner_step, str(tmp_path))
    got = torch.load(tmp_path / "fsdp.pt")
    assert max_difference(expected, initial) > 5e-3
    assert max_difference(got, expected) < 1e-5


@pytest.mark.slow
def test_sharded_checkpoint_from_two_ranks_loads_in_one_process_with_the_same_predictions(tmp_path):
    spawn(_train_and_predict, str(tmp_path))
    saved = torch.load(tmp_path / "fsdp_predictions.pt")
    last = tmp_path / "run" / "checkpoints" / "last"
    # The sharded layout: one shard file per rank, no full weights file.
    assert fsdp.is_sharded_checkpoint(last) and is_complete_checkpoint(last)
    assert sorted(p.name for p in (last / fsdp.SHARDED_DIR).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (last / "model.safetensors").exists()
    state = json.loads((last / "trainer_state.json").read_text())
    assert (state["world_size"], state["strategy"], state["global_step"]) == (2, "fsdp", 4)

    model = TwoEncoders(seed=5)  # other initial weights: everything must come from the checkpoint
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    restored = load_checkpoint(last, model, optimizer, restore_rng=False)
    assert restored["global_step"] == 4 and "world_size" not in restored
    assert torch.allclose(predictions(model), saved["logits"], atol=1e-10)
    assert len(optimizer.state) == len(list(model.parameters()))  # AdamW moments came back too
    assert all(float(s["step"]) == 4 for s in optimizer.state.values())

    # best/ is an ordinary model directory with the full (gathered) weights.
    best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    assert set(best) == set(TwoEncoders().state_dict())
    history = saved["history"]
    assert [row["epoch"] for row in history] == [0, 1] and all("val_loss" in row for row in history)
    best_epoch = min(history, key=lambda row: row["val_loss"])["epoch"]
    if best_epoch == 1:  # best/ then holds the last weights
        model_best = TwoEncoders(seed=5)
        model_best.load_state_dict(best)
        assert torch.allclose(predictions(model_best), saved["logits"], atol=1e-10)
    # Validation ran on the whole split on every rank: the one-process value on the same weights.
    val = toy_loader(7, seed=2, size=7)
    model.eval()
    with torch.no_grad():
        expected_val_loss = float(model(next(iter(val))).loss)
    assert history[-1]["val_loss"] == pytest.approx(expected_val_loss, abs=1e-10)


def _classifier_run(rank: int, out: str) -> None:
    model = classifier()
    Trainer(model, train_config(epochs=1, strategy="fsdp"), loader(rows(12), 3, shuffle=True), run_dir=f"{out}/run",
            verbose=False).fit()
    model.eval()
    with torch.no_grad():
        logits = model(rows(5, seed=7).collate(list(range(5)))).logits
    if rank == 0:
        torch.save(logits, f"{out}/logits.pt")


@pytest.mark.slow
def test_a_classifier_trained_with_fsdp_reloads_in_one_process_from_best_and_from_the_sharded_checkpoint(tmp_path):
    """The real image + text classifier: best/ (gathered to rank 0) rebuilds with from_pretrained, the sharded last
    checkpoint loads into a fresh classifier, and both predict what the 2-rank sharded model predicted."""
    from polymodal.models import MultimodalModel

    spawn(_classifier_run, str(tmp_path))
    expected = torch.load(tmp_path / "logits.pt")
    probe = rows(5, seed=7).collate(list(range(5)))
    best = MultimodalModel.from_pretrained(tmp_path / "run" / "best")  # one epoch: best/ is the final model
    fresh = classifier(seed=11)
    load_checkpoint(tmp_path / "run" / "checkpoints" / "last", fresh, restore_rng=False)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(best.double()(probe).logits, expected, atol=1e-10)
        assert torch.allclose(fresh(probe).logits, expected, atol=1e-10)
    assert not torch.allclose(classifier(seed=11).eval()(probe).logits, expected, atol=1e-3)


@pytest.mark.slow
def test_fsdp_resume_after_a_stop_gives_the_uninterrupted_weights(tmp_path):
    """Dropout on: the RNG state travels with the sharded checkpoint too."""
    spawn(_fit, str(tmp_path), "straight", 2, False, None, 0.3)
    spawn(_fit, str(tmp_path), "resumed", 2, False, 1, 0.3)  # stop mid-epoch after one step
    assert json.loads((tmp_path / "resumed/checkpoints/last/trainer_state.json").read_text())["global_step"] == 1
    spawn(_fit, str(tmp_path), "resumed", 2, True, None, 0.3)
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    assert max_difference(straight, plain_weights(TwoEncoders())) > 5e-3
    assert max_difference(resumed, straight) < 1e-10


@pytest.mark.slow
def test_resume_across_world_sizes_with_the_same_global_batch(tmp_path):
    """2 ranks × batch 2 is 1 process × batch 4 (rank r takes positions r, r + 2, ... of the same epoch order):
    a sharded checkpoint resumes in one process, an ordinary one on 2 FSDP ranks, both ending where one
    uninterrupted process ends."""
    reference, _, _ = _fit_one_process(tmp_path, "reference")
    expected = plain_weights(reference)
    assert max_difference(expected, plain_weights(TwoEncoders())) > 5e-3

    spawn(_fit, str(tmp_path), "two_then_one", 2, False, 1, 0.0)
    assert fsdp.is_sharded_checkpoint(tmp_path / "two_then_one" / "checkpoints" / "last")
    _, trainer, messages = _fit_one_process(tmp_path, "two_then_one", resume=True)
    assert any("saved mid-epoch on 2 process(es), resumed on 1" in m for m in messages)
    assert max_difference(plain_weights(trainer.model), expected) < 1e-10

    _fit_one_process(tmp_path, "one_then_two", stop_after_steps=1)
    assert (tmp_path / "one_then_two" / "checkpoints" / "last" / "model.safetensors").is_file()  # ordinary format
    spawn(_fit, str(tmp_path), "one_then_two", 2, True, None, 0.0)
    assert max_difference(torch.load(tmp_path / "one_then_two.pt"), expected) < 1e-10
