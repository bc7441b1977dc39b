"""Random ModalityOutputs for fusion tests (shared by the tests in this folder)."""

from __future__ import annotations

import torch

from polymodal.types import ModalityOutput

DIM = 16
# Different token counts per modality, so concatenation / attention bugs show up as shape errors.
TOKEN_COUNTS = {"image": 5, "audio": 7, "text": 3}
MODALITY_SETS = {2: ["image", "audio"], 3: ["image", "audio", "text"]}


def make_outputs(names: list[str], present: dict[str, list[bool]], dim: int = DIM, seed: int = 0,
                 requires_grad: bool = False) -> dict[str, ModalityOutput]:
    """One ModalityOutput per name, following the encoder contract.

    Present samples have 2..N real tokens (random padding; >= 2 so attention over them is not trivially 1) and pooled = masked mean of the real tokens.
    Absent samples have mask all False and pooled zeros, but their tokens are random garbage, so a fusion
    that reads them is caught.
    """
    generator = torch.Generator().manual_seed(seed)
    outputs = {}
    for name in names:
        flags = torch.tensor(present[name], dtype=torch.bool)
        batch, count = flags.shape[0], TOKEN_COUNTS[name]
        tokens = torch.randn(batch, count, dim, generator=generator)
        lengths = torch.randint(min(2, count), count + 1, (batch,), generator=generator)
        mask = (torch.arange(count).unsqueeze(0) < lengths.unsqueeze(1)) & flags.unsqueeze(1)
        weights = mask.float().unsqueeze(-1)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        if requires_grad:
            tokens.requires_grad_(True)
            pooled.requires_grad_(True)
        outputs[name] = ModalityOutput(tokens=tokens, mask=mask, pooled=pooled, present=flags)
    return outputs


def coverage_pattern(names: list[str]) -> dict[str, list[bool]]:
    """Sample 0 has every modality; sample 1 + i lacks modality i; the last sample has none.

    So each modality is present in some samples and absent in others, and some samples hold several.
    """
    batch = len(names) + 2
    return {name: [not (b == 1 + i or b == batch - 1) for b in range(batch)] for i, name in enumerate(names)}


def all_present(names: list[str], batch: int = 4) -> dict[str, list[bool]]:
    return {name: [True] * batch for name in names}


def replace_absent(outputs: dict[str, ModalityOutput], value_fn) -> dict[str, ModalityOutput]:
    """A copy where the tokens and pooled of absent samples (and padded tokens) are replaced by value_fn(shape)."""
    changed = {}
    for name, out in outputs.items():
        token_keep = out.mask.unsqueeze(-1)
        pooled_keep = out.present.unsqueeze(-1)
        changed[name] = ModalityOutput(
            tokens=torch.where(token_keep, out.tokens.detach(), value_fn(out.tokens.shape)),
            mask=out.mask,
            pooled=torch.where(pooled_keep, out.pooled.detach(), value_fn(out.pooled.shape)),
            present=out.present,
        )
    return changed
