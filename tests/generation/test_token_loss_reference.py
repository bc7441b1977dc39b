"""token_loss against Hugging Face's causal-LM loss (transformers.loss.loss_utils.ForCausalLMLoss) and against
the shifted-logits form it replaced: same value (to fp32 rounding) and bit-identical gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polymodal.generation import IGNORE_INDEX, token_loss


def random_case(seed: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    batch, length, vocab = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 6), (1, 40), (3, 500)))
    logits = (3 * torch.randn(batch, length, vocab, generator=g)).to(dtype).requires_grad_(True)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[torch.rand(batch, length, generator=g) < 0.4] = IGNORE_INDEX
    return logits, labels, vocab


@pytest.mark.parametrize("seed", range(10))
def test_equals_transformers_causal_lm_loss(seed):
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits, labels, vocab = random_case(seed, torch.float32)
    loss_sum, count = token_loss(logits, labels)
    assert count.item() == int((labels[:, 1:] != IGNORE_INDEX).sum())
    if count.item() == 0:
        assert loss_sum.item() == 0.0
        return
    reference = ForCausalLMLoss(logits, labels, vocab_size=vocab)  # mean over the same positions
    torch.testing.assert_close(loss_sum / count, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(10))
def test_gradients_are_those_of_the_shifted_logits_form(seed, dtype):
    logits, labels, _ = random_case(seed, dtype)
    loss_sum, count = token_loss(logits, labels)
    assert loss_sum.dtype == torch.float32
    shifted = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                              ignore_index=IGNORE_INDEX, reduction="sum")
    torch.testing.assert_close(loss_sum, shifted, rtol=1e-6, atol=1e-5)
    (ours,) = torch.autograd.grad(loss_sum, logits)
    (theirs,) = torch.autograd.grad(shifted, logits)
    assert torch.equal(ours, theirs)
    assert not ours[:, -1].any()  # the last position predicts nothing
