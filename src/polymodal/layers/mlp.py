"""The transformer MLP fc2(act(fc1(x))) as one autograd function, and CLIP's quick_gelu.

The fused function runs 3 forward and 7 backward kernels instead of autograd's 5 and 9: the activation's
constant pre-scale is folded into the two matmuls, so no separate pass over the [T, 4D] activations scales them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's x·σ(1.702x) (Radford et al. 2021, OpenAI CLIP ``QuickGELU``), written as silu(1.702x)/1.702:
    silu is one fused kernel forward and backward. Any shape → same shape."""
    return F.silu(x * 1.702) * (1 / 1.702)


# activation → (pre-scale s, fn, fn_backward): act(h) = fn(s·h) / s. quick_gelu(h) = silu(1.702h) / 1.702.
MLP_ACTIVATIONS = {"quick_gelu": (1.702, F.silu, torch.ops.aten.silu_backward),
                   "gelu": (1.0, F.gelu, torch.ops.aten.gelu_backward)}


class FusedMLP(torch.autograd.Function):
    """fc2(act(fc1(x))) for x [T, D] with the activation's scales folded into the two matmuls.

    Forward is three kernels: z = s·(x W1ᵀ + b1) (one addmm with alpha = beta = s), a = fn(z), and
    out = (a W2ᵀ)/s + b2 (one addmm with alpha = 1/s). Backward needs no scaling pass either, since
    ∂out/∂h = fn'(z) exactly: grad_h = fn_backward(grad W2, z). Autograd through the module path would run
    five forward and nine backward kernels, four of them extra passes over the [T, 4D] activations.

    ``apply(x [T, D], w1 [H, D], b1 [H], w2 [D, H], b2 [D], act)`` → [T, D]; ``act`` is a key of
    ``MLP_ACTIVATIONS`` ("quick_gelu" or "gelu"; KeyError otherwise). The backward computes in the forward's
    dtypes, so callers use it only outside autocast (``fused_mlp_supported``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: str) -> Tensor:
        scale, fn, _ = MLP_ACTIVATIONS[act]
        z = torch.addmm(b1, x, w1.t(), beta=scale, alpha=scale)
        a = fn(z)
        ctx.save_for_backward(x, w1, w2, z, a)
        ctx.act = act
        return torch.addmm(b2, a, w2.t(), alpha=1 / scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w1, w2, z, a = ctx.saved_tensors
        scale, _, fn_backward = MLP_ACTIVATIONS[ctx.act]
        need = ctx.needs_input_grad
        grad_h = fn_backward(grad.mm(w2), z)  # = ∂loss/∂(x W1ᵀ + b1): the 1/s and s cancel
        # beta = 0: the first argument only gives the shape, it is not read
        grad_w2 = torch.addmm(w2, grad.t(), a, beta=0, alpha=1 / scale) if need[3] else None
        grad_b2 = grad.sum(0) if need[4] else None
        grad_w1 = grad_h.t().mm(x) if need[1] else None
        grad_b1 = grad_h.sum(0) if need[2] else None
        grad_x = grad_h.mm(w1) if need[0] else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None


def fused_mlp_supported(h: Tensor, weight: Tensor) -> bool:
    """Whether ``FusedMLP`` may run on h: same dtype as the weights and no autocast (whose casts the fused
    backward, working in the forward's dtypes, would not reproduce)."""
    return h.dtype == weight.dtype and not torch.is_autocast_enabled(h.device.type)
