"""(a) One optimizer step on 2 DDP ranks (each its half of an 8-row batch) gives the weights one process gets on the
whole batch, to 1e-6, for a classifier and for a CLIP aligner (the contrastive loss gathers across ranks).

Rank 0 reads rows 0, 2, 4, 6 and rank 1 rows 1, 3, 5, 7 (DistributedEpochSampler, shuffle off): the union is the
single process's batch. Row 7 lacks text, so the aligner's ranks hold 4 and 3 pairs (uneven gather)."""

from __future__ import annotations

import pytest
import torch
from ddp_helpers import aligner, classifier, loader, max_difference, rows, spawn, train_config, weights

from polymodal.training import Trainer

BUILDERS = {"classification": classifier, "alignment": aligner}


def _one_step(rank: int, kind: str, out: str, batch_size: int, grad_accum: int) -> None:
    model = BUILDERS[kind]()
    cfg = train_config(max_steps=1, grad_accum=grad_accum)
    Trainer(model, cfg, loader(rows(8), batch_size, shuffle=False), run_dir=f"{out}/run", verbose=False).fit()
    if rank == 0:
        torch.save(weights(model), f"{out}/ddp.pt")


def _single(kind: str, tmp_path) -> dict[str, torch.Tensor]:
    model = BUILDERS[kind]()
    Trainer(model, train_config(max_steps=1), loader(rows(8), 8, shuffle=False), run_dir=tmp_path / "single",
            verbose=False).fit()
    return weights(model)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classification", "alignment"])
def test_one_ddp_step_equals_one_process_on_the_concatenated_batch(kind, tmp_path):
    initial = weights(BUILDERS[kind]())
    expected = _single(kind, tmp_path)
    spawn(_one_step, kind, str(tmp_path), 4, 1)
    got = torch.load(tmp_path / "ddp.pt")
    assert max_difference(expected, initial) > 5e-3  # the step moved the weights (AdamW: ~lr)
    assert max_difference(got, expected) < 1e-6


@pytest.mark.slow
def test_grad_accum_under_ddp_is_the_same_global_step(tmp_path):
    """2 ranks × 2 micro-batches of 2 rows (no_sync on the first) == 1 process × 8 rows."""
    expected = _single("classification", tmp_path)
    spawn(_one_step, "classification", str(tmp_path), 2, 2)
    assert max_difference(torch.load(tmp_path / "ddp.pt"), expected) < 1e-6
