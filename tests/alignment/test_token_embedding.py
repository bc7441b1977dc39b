"""TokenEmbedding: same gradients as nn.Embedding, with the [V, D] gradient buffer reused across steps on CPU."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from polymodal.layers import TokenEmbedding


def pair(vocab: int = 50, dim: int = 8) -> tuple[TokenEmbedding, nn.Embedding]:
    torch.manual_seed(0)
    fast = TokenEmbedding(vocab, dim)
    reference = nn.Embedding(vocab, dim)
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def backward_both(fast: nn.Module, reference: nn.Module, ids: torch.Tensor, grad: torch.Tensor) -> None:
    fast(ids).backward(grad)
    reference(ids).backward(grad)


def test_gradient_equals_nn_embedding_and_buffer_is_reused_after_zero_grad():
    fast, reference = pair()
    optimizer = torch.optim.AdamW(fast.parameters(), lr=0.1)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=0.1)
    pointers = []
    for step in range(3):
        ids = torch.randint(0, 50, (4, 7), generator=torch.Generator().manual_seed(step))  # repeated ids
        grad = torch.randn(4, 7, 8)
        optimizer.zero_grad(set_to_none=True)
        reference_optimizer.zero_grad(set_to_none=True)
        backward_both(fast, reference, ids, grad)
        torch.testing.assert_close(fast.weight.grad, reference.weight.grad, atol=1e-6, rtol=0)
        pointers.append(fast.weight.grad.data_ptr())
        optimizer.step()
        reference_optimizer.step()
    torch.testing.assert_close(fast.weight, reference.weight, atol=1e-6, rtol=0)
    assert len(set(pointers)) == 1, "the gradient buffer should be reused once zero_grad dropped it"


def test_gradient_accumulation_adds_into_the_live_gradient():
    fast, reference = pair()
    ids, grad = torch.randint(0, 50, (3, 5)), torch.randn(3, 5, 8)
    backward_both(fast, reference, ids, grad)
    one_step = reference.weight.grad.clone()
    for _ in range(2):  # no zero_grad in between: .grad is alive, a fresh buffer must be added to it
        backward_both(fast, reference, ids, grad)
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.weight.grad, 3 * one_step, atol=1e-5, rtol=0)


def test_a_gradient_the_caller_kept_is_never_overwritten():
    fast, _ = pair()
    ids = torch.randint(0, 50, (3, 5))
    fast(ids).sum().backward()
    kept = fast.weight.grad
    snapshot = kept.clone()
    fast.weight.grad = None  # the caller still holds `kept`
    fast(ids).mul(2).sum().backward()
    assert torch.equal(kept, snapshot)
    assert fast.weight.grad.data_ptr() != kept.data_ptr()
    torch.testing.assert_close(fast.weight.grad, 2 * snapshot)


@pytest.mark.parametrize("options", [dict(padding_idx=0), dict(max_norm=1.0), dict(scale_grad_by_freq=True)])
def test_options_nn_embedding_handles_itself_fall_back_to_it(options):
    torch.manual_seed(0)
    fast, reference = TokenEmbedding(20, 4, **options), nn.Embedding(20, 4, **options)
    reference.load_state_dict(fast.state_dict())
    ids = torch.tensor([[0, 3, 3, 7]])
    grad = torch.randn(1, 4, 4)
    backward_both(fast, reference, ids, grad)
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)
    assert fast._gradient_storage is None


def test_no_grad_and_copies_do_not_carry_the_buffer():
    fast, _ = pair()
    ids = torch.randint(0, 50, (2, 3))
    with torch.no_grad():
        out = fast(ids)
    assert not out.requires_grad and fast._gradient_storage is None
    fast(ids).sum().backward()
    assert fast._gradient_storage is not None
    assert copy.deepcopy(fast)._gradient_storage is None
    assert pickle.loads(pickle.dumps(fast))._gradient_storage is None
    fast.double()  # a dtype change invalidates the cached storage
    assert fast._gradient_storage is None
    fast.weight.grad = None
    fast(ids).sum().backward()
    assert fast.weight.grad.dtype == torch.float64
