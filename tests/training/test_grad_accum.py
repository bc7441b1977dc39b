"""Gradient accumulation over uneven micro-batches (4 + 4 + 2, 3 + 3 + 3 + 1) gives the whole step's gradient.

Classification heads (multiclass, binary, multilabel; early and late fusion): the accumulated gradient equals the
gradient of the mean loss over the same samples in one batch. Alignment objectives: per-sample (clip, siglip),
per-scored-pair (itm) and per-token (mlm) losses are weighted by each micro-batch's items over the step's items;
for MLM, whose per-token losses do not interact across samples, that is again exactly the one-batch gradient.
Everything runs in float64, so the tolerance is 1e-5 relative where float32 rounding would need ~1e-4.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from polymodal.config import (
    AlignmentConfig,
    FusionConfig,
    HeadConfig,
    ModalityConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
)
from polymodal.models import AlignmentModel, MultimodalModel
from polymodal.objectives.accumulation import LossTerm, check_counts, combine
from polymodal.objectives.masked_lm import IGNORE_INDEX, MLM_LABELS_KEY
from polymodal.tasks import task_loss
from polymodal.training import Trainer
from polymodal.types import Batch

N = 10
VOCAB = 40
LABELS = ["a", "b", "c"]


class Rows(Dataset):
    """The rows of one Batch, collated back into Batches (a shuffle-free loader keeps rows in order)."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        return take(self.batch, torch.tensor(indices))


def take(batch: Batch, rows: torch.Tensor) -> Batch:
    return Batch(
        inputs={m: {k: v[rows] for k, v in d.items()} for m, d in batch.inputs.items()},
        present={m: v[rows] for m, v in batch.present.items()},
        labels=None if batch.labels is None else batch.labels[rows],
        ids=[batch.ids[i] for i in rows.tolist()],
    )


def concat(batches: list[Batch]) -> Batch:
    first = batches[0]
    return Batch(
        inputs={m: {k: torch.cat([b.inputs[m][k] for b in batches]) for k in d} for m, d in first.inputs.items()},
        present={m: torch.cat([b.present[m] for b in batches]) for m in first.present},
        labels=None if first.labels is None else torch.cat([b.labels for b in batches]),
        ids=[i for b in batches for i in b.ids],
    )


def first_step(model: nn.Module, batch: Batch, batch_size: int, grad_accum: int, tmp_path, setup=None):
    """(gradients at the first optimizer step, trainer) of a Trainer run over ``batch``'s rows in order."""
    data = Rows(batch)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=data.collate)
    cfg = TrainConfig(epochs=1, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0, schedule="constant",
                      grad_accum=grad_accum, clip_grad_norm=None, device="cpu", progress=False, log_every=0,
                      seed=0)
    trainer = Trainer(model, cfg, loader, run_dir=tmp_path / f"run{batch_size}x{grad_accum}")
    if setup is not None:
        setup(model)
    seen, step = [], trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    trainer.fit()
    return seen[0], trainer


def relative_error(got: dict, expected: dict) -> float:
    """Relative L2 error over every parameter; a missing gradient counts as zeros (e.g. one only through ·0)."""
    names = set(got) | set(expected)
    zero = {n: torch.zeros_like(got.get(n, expected.get(n))) for n in names}
    got, expected = {**zero, **got}, {**zero, **expected}
    num = sum(float((got[n] - expected[n]).norm() ** 2) for n in expected) ** 0.5
    return num / sum(float(expected[n].norm() ** 2) for n in expected) ** 0.5


def reference_gradient(model: nn.Module, loss_fn) -> tuple[dict, float]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, float(loss)


# ---------------------------------------------------------------------------------------------- classification


def classifier(task: str, fusion: str) -> MultimodalModel:
    torch.manual_seed(0)
    config = ModelConfig(
        modalities={
            "image": ModalityConfig(kind="image", encoder="image_vit",
                                    options={"in_channels": 1, "image_size": 8, "patch_size": 4, "dim": 16,
                                             "depth": 1, "heads": 2}),
            "text": ModalityConfig(kind="text", encoder="text_transformer",
                                   options={"vocab_size": VOCAB, "dim": 16, "depth": 1, "heads": 2,
                                            "max_positions": 16, "dropout": 0.0}),
        },
        fusion=FusionConfig(name=fusion, dim=8),
        head=HeadConfig(labels=["neg", "pos"] if task == "binary" else list(LABELS), task=task, dropout=0.0),
    )
    return MultimodalModel(config).double()


def classification_batch(task: str) -> Batch:
    gen = torch.Generator().manual_seed(7)
    attention = torch.ones(N, 6, dtype=torch.long)
    attention[::3, 4:] = 0
    present_text = torch.ones(N, dtype=torch.bool)
    present_text[[2, 9]] = False  # missing modalities, one of them in the short last micro-batch
    if task == "multiclass":
        labels = torch.randint(0, len(LABELS), (N,), generator=gen)
    elif task == "binary":
        labels = torch.randint(0, 2, (N,), generator=gen).double()
    else:
        labels = (torch.rand(N, len(LABELS), generator=gen) < 0.5).double()
    return Batch(
        inputs={"image": {"pixel_values": torch.randn(N, 1, 8, 8, generator=gen, dtype=torch.float64)},
                "text": {"input_ids": torch.randint(2, VOCAB, (N, 6), generator=gen) * attention,
                         "attention_mask": attention}},
        present={"image": torch.ones(N, dtype=torch.bool), "text": present_text},
        labels=labels,
        ids=[f"s{i}" for i in range(N)],
    )


@pytest.mark.parametrize("task,fusion", [("multiclass", "concat"), ("binary", "concat"), ("multilabel", "concat"),
                                         ("multiclass", "late"), ("multilabel", "late")])
@pytest.mark.parametrize("batch_size,grad_accum", [(4, 3), (3, 4)])  # 4+4+2 and 3+3+3+1 in one step
def test_uneven_micro_batches_give_the_full_batch_gradient(tmp_path, task, fusion, batch_size, grad_accum):
    model, batch = classifier(task, fusion), classification_batch(task)
    expected, full_loss = reference_gradient(copy.deepcopy(model), lambda m: task_loss(m, batch))
    got, trainer = first_step(model, batch, batch_size, grad_accum, tmp_path)
    assert relative_error(got, expected) <= 1e-5
    # The logged epoch loss is the mean over the 10 samples (before the step), not a mean of micro-batch means.
    assert trainer.state["history"][0]["train_loss"] == pytest.approx(full_loss, rel=1e-10)


def test_a_short_last_step_of_an_epoch_is_its_own_mean(tmp_path):
    """10 samples, batch 4 × accum 2: steps of 4+4 and of 2; the first step follows the mean over its 8."""
    model, batch = classifier("multiclass", "concat"), classification_batch("multiclass")
    first8 = take(batch, torch.arange(8))
    expected, _ = reference_gradient(copy.deepcopy(model), lambda m: task_loss(m, first8))
    got, trainer = first_step(model, batch, 4, 2, tmp_path)
    assert relative_error(got, expected) <= 1e-5
    assert trainer.state["global_step"] == 2


class MeanSquaredError(nn.Module):
    """A plain model with only ``.loss`` (no loss_terms / loss_counts): weighted by samples."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1).double()

    def forward(self, batch: Batch) -> SimpleNamespace:
        prediction = self.linear(batch.inputs["x"]["values"]).squeeze(-1)
        return SimpleNamespace(loss=((prediction - batch.labels) ** 2).mean())


def test_models_without_loss_terms_are_weighted_by_samples(tmp_path):
    gen = torch.Generator().manual_seed(1)
    batch = Batch(inputs={"x": {"values": torch.randn(N, 3, generator=gen, dtype=torch.float64)}},
                  present={"x": torch.ones(N, dtype=torch.bool)},
                  labels=torch.randn(N, generator=gen, dtype=torch.float64), ids=[str(i) for i in range(N)])
    model = MeanSquaredError()
    expected, _ = reference_gradient(copy.deepcopy(model), lambda m: task_loss(m, batch))
    got, _ = first_step(model, batch, 4, 3, tmp_path)
    assert relative_error(got, expected) <= 1e-10


# ---------------------------------------------------------------------------------------------- alignment

TEXT = {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2, "dropout": 0.0},
        "processor": {"max_length": 16}}
IMAGE = {"kind": "image", "encoder": "image_vit", "processor": {"image_size": 8, "channels": 1},
         "options": {"in_channels": 1, "image_size": 8, "patch_size": 4, "dim": 16, "depth": 1, "heads": 2}}
SMALL = {"width": 16, "heads": 2}
CAPTIONS = ["a red cat", "one blue dog sat", "green mat on the floor", "a cat", "dog dog dog", "the mat",
            "sat on red", "blue", "green cat dog", "a long sentence about nothing"]


def aligner(objectives: list[dict], modalities=("image", "text")) -> AlignmentModel:
    specs = {"image": IMAGE, "text": TEXT, "caption": TEXT}
    config = from_dict(AlignmentConfig, {"modalities": {m: specs[m] for m in modalities}, "embed_dim": 8,
                                         "objectives": objectives}, "alignment")
    torch.manual_seed(0)
    return AlignmentModel(config).double()


def alignment_batch(model: AlignmentModel, present: dict[str, list[int]] | None = None) -> Batch:
    gen = torch.Generator().manual_seed(3)
    inputs, flags = {}, {}
    for name in model.modality_names:
        if name == "image":
            inputs[name] = {"pixel_values": torch.randn(N, 1, 8, 8, generator=gen, dtype=torch.float64)}
        else:
            processor = model.processors[name]
            texts = CAPTIONS if name == "text" else CAPTIONS[::-1]
            inputs[name] = processor.collate([processor(t) for t in texts])
        flags[name] = torch.ones(N, dtype=torch.bool)
        for row in (present or {}).get(name, []):
            flags[name][row] = False
    return Batch(inputs=inputs, present=flags, ids=[f"s{i}" for i in range(N)])


def seed_generators(model: AlignmentModel) -> None:
    """ITM negatives and MLM masks from seeded generators, so a reference run can replay the same draws."""
    for i, objective in enumerate(model.objectives):
        if hasattr(objective, "generator"):
            objective.generator = torch.Generator().manual_seed(100 + i)


def independent_items(name: str, micro: Batch, a: str, b: str) -> float:
    """Items of one objective on one pair of a prepared micro-batch, counted here without the model's help."""
    rows = micro.present[a] & micro.present[b]
    n = int(rows.sum())
    if name.startswith("itm"):
        return 3.0 * n if n >= 2 else 0.0  # n positives + a negative per row and per column (no label groups)
    if name.startswith("mlm"):
        text = b if b in ("text", "caption") and a == "image" else a
        if a != "image" and b != "image":
            return 0.0  # text-text pair: MLM does not apply
        return float((micro.inputs[text][MLM_LABELS_KEY][rows] != IGNORE_INDEX).sum())
    return float(n)


def step_reference(model: AlignmentModel, micro_batches: list[Batch]) -> torch.Tensor:
    """Σ_objective w · mean over pairs with items of Σ_i (items_i / items of the step) · mean loss of micro-batch i."""
    prepared = [model.prepare_batch(b) for b in micro_batches]  # the Trainer draws a step's masks first, too
    outputs = [model(b) for b in prepared]
    total = torch.zeros((), dtype=torch.float64)
    for name, weight in zip(model.objective_names, model.objective_weights):
        pair_losses = []
        for a, b in model.pairs:
            items = [independent_items(name, micro, a, b) for micro in prepared]
            if sum(items) == 0:
                continue
            key = f"{name}/{a}-{b}"
            pair_losses.append(sum(out.losses[key] * (c / sum(items)) for out, c in zip(outputs, items) if c > 0))
        total = total + weight * sum(pair_losses) / len(pair_losses)
    return total


@pytest.mark.parametrize("objectives", [
    [{"name": "clip"}],
    [{"name": "siglip"}],
    [{"name": "itm", "options": SMALL}],
    [{"name": "mlm", "options": {**SMALL, "probability": 0.3}}],
])
def test_alignment_objectives_weight_micro_batches_by_their_items(tmp_path, objectives):
    model = aligner(objectives)
    batch = alignment_batch(model)
    micro = [take(batch, torch.arange(0, 4)), take(batch, torch.arange(4, 8)), take(batch, torch.arange(8, 10))]
    reference = copy.deepcopy(model)
    seed_generators(reference)
    expected, step_loss = reference_gradient(reference, lambda m: step_reference(m, micro))
    got, trainer = first_step(model, batch, 4, 3, tmp_path, setup=seed_generators)
    assert relative_error(got, expected) <= 1e-5
    assert trainer.state["history"][0]["train_loss"] == pytest.approx(step_loss, rel=1e-10)


def test_three_modalities_missing_samples_and_weighted_objectives(tmp_path):
    """Pairs hold different samples per micro-batch (caption absent in rows 1, 5, 9; text in row 8): each pair is
    normalised by its own items over the step; a pair with one row in the last micro-batch has no ITM items."""
    objectives = [{"name": "clip"}, {"name": "itm", "weight": 0.5, "options": SMALL},
                  {"name": "mlm", "weight": 0.25, "options": {**SMALL, "probability": 0.4}}]
    model = aligner(objectives, ("image", "text", "caption"))
    batch = alignment_batch(model, present={"caption": [1, 5, 9], "text": [8]})
    micro = [take(batch, torch.arange(0, 4)), take(batch, torch.arange(4, 8)), take(batch, torch.arange(8, 10))]
    reference = copy.deepcopy(model)
    seed_generators(reference)
    expected, step_loss = reference_gradient(reference, lambda m: step_reference(m, micro))
    got, trainer = first_step(model, batch, 4, 3, tmp_path, setup=seed_generators)
    assert relative_error(got, expected) <= 1e-5
    assert trainer.state["history"][0]["train_loss"] == pytest.approx(step_loss, rel=1e-10)


def test_mlm_accumulation_is_the_one_batch_token_mean(tmp_path):
    """Per-token MLM losses do not interact across samples: 4+4+2 accumulation = one batch with the same masks,
    normalised over the step's masked tokens (not a mean of per-micro-batch token means)."""
    model = aligner([{"name": "mlm", "options": {**SMALL, "probability": 0.3}}])
    batch = alignment_batch(model)
    reference = copy.deepcopy(model)
    seed_generators(reference)
    micro = [take(batch, torch.arange(0, 4)), take(batch, torch.arange(4, 8)), take(batch, torch.arange(8, 10))]
    prepared = [reference.prepare_batch(b) for b in micro]
    tokens = [int((p.inputs["text"][MLM_LABELS_KEY] != IGNORE_INDEX).sum()) for p in prepared]
    assert len(set(tokens)) > 1  # uneven token counts: a mean of means would differ
    expected, _ = reference_gradient(reference, lambda m: task_loss(m, concat(prepared)))
    got, _ = first_step(model, batch, 4, 3, tmp_path, setup=seed_generators)
    assert relative_error(got, expected) <= 1e-5


# ---------------------------------------------------------------------------------------------- combine


def test_combine_splits_a_step_loss_into_micro_batch_shares():
    x = torch.tensor(2.0, requires_grad=True)
    terms = [{"clip/a-b": LossTerm(3 * x, 3.0), "mlm/a-b": LossTerm(x, 5.0, weight=0.5)},
             {"clip/a-b": LossTerm(x, 1.0), "clip/a-c": LossTerm(4 * x, 2.0)}]
    step = {"clip/a-b": 4.0, "clip/a-c": 2.0, "mlm/a-b": 5.0}
    shares = [combine(t, step) for t in terms]
    # clip: mean over its two pairs of (3x + x) / 4 and 4x / 2; mlm: 0.5 · x / 5.
    assert float(sum(shares)) == pytest.approx((4 * 2.0 / 4 + 4 * 2.0 / 2) / 2 + 0.5 * 2.0 / 5)
    # One batch on its own: combine(terms) is its mean loss.
    assert float(combine(terms[0])) == pytest.approx(3 * 2.0 / 3 + 0.5 * 2.0 / 5)


def test_check_counts_refuses_a_forward_that_saw_other_items():
    terms = {"clip/a-b": LossTerm(torch.tensor(1.0), 3.0)}
    check_counts(terms, {"clip/a-b": 3.0, "mlm/a-b": 0.0})
    with pytest.raises(RuntimeError, match="loss_counts"):
        check_counts(terms, {"clip/a-b": 4.0})


@pytest.mark.parametrize("groups,expected", [(None, 12), ([5, 5, 5, 5], 4), ([0, 0, 0, 1], 12), ([0, 0, 1, 1], 12)])
def test_itm_counts_the_pairs_it_scores(groups, expected):
    """ITM averages over n positives + the hard negatives that exist: count() must announce exactly those."""
    model = aligner([{"name": "itm", "options": {**SMALL, "labels_as_positives": True}}])
    batch = alignment_batch(model)
    batch = take(batch, torch.arange(4))
    if groups is not None:
        batch.labels = torch.tensor(groups)
    scored = []
    model.objectives[0].classifier.register_forward_hook(lambda module, args, out: scored.append(out.shape[0]))
    out = model(batch)
    assert model.loss_counts(batch) == {"itm/image-text": float(expected)}
    assert scored == [expected] and out.loss_terms["itm/image-text"].count == expected
