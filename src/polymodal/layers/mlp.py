"""The transformer MLP fc2(act(fc1(x))) as one autograd function, and CLIP's quick_gelu.

The fused function runs 3 forward and 7 backward kernels instead of autograd's 5 and 9: the activation's
constant pre-scale is folded into the two matmuls, so no separate pass over the [T, 4D] activations scales them.
CPU fp32 products go through oneDNN where it is the faster backend (``layers.gemm``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .gemm import mm_forward, mm_grad_input, mm_grad_weight, use_onednn


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
        onednn = use_onednn(x, w1)
        if onednn:
            # oneDNN's product has no alpha / beta: the scales go into the (small) weights instead of a pass over
            # the [T, H] activations
            s1 = (w1, b1) if scale == 1.0 else (w1 * scale, b1 * scale)
            z = mm_forward(x, *s1, True)
        else:
            z = torch.addmm(b1, x, w1.t(), beta=scale, alpha=scale)
        a = fn(z)
        ctx.save_for_backward(x, w1, w2, z, a)
        ctx.act, ctx.onednn = act, onednn
        if onednn:
            return mm_forward(a, w2 if scale == 1.0 else w2 * (1 / scale), b2, True)
        return torch.addmm(b2, a, w2.t(), alpha=1 / scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w1, w2, z, a = ctx.saved_tensors
        scale, _, fn_backward = MLP_ACTIVATIONS[ctx.act]
        need, onednn = ctx.needs_input_grad, ctx.onednn
        grad = grad.contiguous()
        grad_h = fn_backward(mm_grad_input(grad, w2, onednn), z)  # = ∂loss/∂(x W1ᵀ + b1): the 1/s and s cancel
        grad_w2 = None
        if need[3]:
            if onednn:  # the 1/s on the weight-sized result, not on the [T, H] activations
                grad_w2 = mm_grad_weight(grad, a, True)
                grad_w2 = grad_w2 if scale == 1.0 else grad_w2.mul_(1 / scale)
            else:  # beta = 0: the first argument only gives the shape, it is not read
                grad_w2 = torch.addmm(w2, grad.t(), a, beta=0, alpha=1 / scale)
        grad_b2 = grad.sum(0) if need[4] else None
        grad_w1 = mm_grad_weight(grad_h, x, onednn) if need[1] else None
        grad_b1 = grad_h.sum(0) if need[2] else None
        grad_x = mm_grad_input(grad_h, w1, onednn) if need[0] else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None


def fused_mlp_supported(h: Tensor, weight: Tensor) -> bool:
    """Whether ``FusedMLP`` may run on h: same dtype as the weights and no autocast (whose casts the fused
    backward, working in the forward's dtypes, would not reproduce)."""
    return h.dtype == weight.dtype and not torch.is_autocast_enabled(h.device.type)
