"""fp32 matrix products on CPU through oneDNN where it beats the BLAS torch links (MKL), with their backward.

Why: torch's CPU ``mm``/``addmm`` call MKL's sgemm, which on AMD CPUs runs a code path far from the chip's peak:
on a Zen 5 EPYC (AVX-512 with full-width FMA units) MKL's sgemm reached ~100 GFLOP/s per core where oneDNN's
(``torch.ops.mkldnn._linear_pointwise``, shipped in every x86 torch build) reached ~150-230 GFLOP/s, in the
forward and both backward products of every CLIP ViT-B/32 layer (benchmarks/clip_train_step.py). Both compute
in fp32 (oneDNN's default "strict" fp32 math; the result differs from MKL's by summation order only, ~1e-6
relative). On Intel CPUs MKL is usually as fast or faster, so the backend is chosen by measuring, once:

- ``POLYMODAL_CPU_GEMM=onednn`` / ``blas`` forces one; unset or ``auto`` times both on one mid-sized product the
  first time a CPU fp32 product runs and keeps the faster (oneDNN must win by 10 % and agree to 1e-4);
- ``set_cpu_gemm_backend(name)`` does the same from code (tests, A/B benchmarks); ``None`` re-decides.

Where oneDNN cannot apply, the BLAS path runs unchanged: other devices and dtypes, autocast, TorchScript tracing,
ONNX export and torch.compile (exporters need plain aten ops).
"""

from __future__ import annotations

import os
import time
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("onednn", "blas")
ENV_VAR = "POLYMODAL_CPU_GEMM"
_backend: str | None = None  # decided lazily: the probe costs a few ms and must not run at import
# Below ~2M multiply-adds oneDNN's fixed cost per call (~10 µs) outweighs its faster kernel (measured on the
# Zen 5 machine: 32×64×64 took 13 µs vs MKL's 5 µs; from 128×256×256 up oneDNN was ~2× faster): tiny products
# of small models stay on BLAS.
MIN_MACS = 1 << 21


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's dense linear op (x86 builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x [T, in] · weight [out, in]ᵀ + bias [out] → [T, out] (strided inputs allowed)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _probe() -> str:
    """Time both backends on one [512, 1024] × [1024, 1024] product; oneDNN only if ≥ 10 % faster and equal."""
    if not onednn_linear_available():
        return "blas"
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(512, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)
    try:
        got = _onednn(x, w, None)
    except RuntimeError:
        return "blas"
    want = x @ w.t()
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-3):
        return "blas"
    best = {"onednn": float("inf"), "blas": float("inf")}
    for _ in range(3):  # interleaved: load from other processes falls on both alike
        for name, fn in (("onednn", lambda: _onednn(x, w, None)), ("blas", lambda: x @ w.t())):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return "onednn" if best["onednn"] < 0.9 * best["blas"] else "blas"


def cpu_gemm_backend() -> str:
    """"onednn" or "blas": the backend CPU fp32 products use in this process (decided on first call)."""
    global _backend
    if _backend is None:
        wanted = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if wanted not in (*BACKENDS, "auto"):
            warnings.warn(f"{ENV_VAR}={wanted!r} is not one of onednn, blas, auto; using auto", stacklevel=2)
            wanted = "auto"
        if wanted == "onednn" and not onednn_linear_available():
            warnings.warn(f"{ENV_VAR}=onednn but this torch build has no oneDNN linear; using blas", stacklevel=2)
            wanted = "blas"
        _backend = _probe() if wanted == "auto" else wanted
    return _backend


def set_cpu_gemm_backend(name: str | None) -> None:
    """Force "onednn" or "blas" for CPU fp32 products in this process; ``None`` decides again (env, probe).

    Raises ValueError for another name, or for "onednn" on a torch build without oneDNN's linear op.
    """
    global _backend
    if name is not None and name not in BACKENDS:
        raise ValueError(f"CPU GEMM backend must be one of {BACKENDS} or None, got {name!r}")
    if name == "onednn" and not onednn_linear_available():
        raise ValueError("this torch build has no oneDNN linear op (torch.ops.mkldnn._linear_pointwise)")
    _backend = name


def use_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether products of ``x`` [..., in] with ``weight`` [out, in] go through oneDNN: both CPU fp32, at least
    ``MIN_MACS`` multiply-adds, no autocast, not being traced or exported, and the process's backend is oneDNN."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    # TorchScript tracing is also how the classic ONNX exporter records a model
    if torch.is_autocast_enabled("cpu") or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if torch.compiler.is_compiling():  # torch.compile / torch.export (the dynamo ONNX exporter) see aten ops
        return False
    if x.numel() * weight.shape[0] < MIN_MACS:  # after the tracing checks: sizes are symbolic there
        return False
    return cpu_gemm_backend() == "onednn"


# ------------------------------------------------------------------ the three products of a linear layer
# Each takes the backend as decided by ``use_onednn`` for the layer, so one layer never mixes backends.


def mm_forward(x: Tensor, weight: Tensor, bias: Tensor | None, onednn: bool) -> Tensor:
    """x [T, in] · weight [out, in]ᵀ (+ bias [out]) → [T, out]."""
    if onednn:
        return _onednn(x, weight, bias)
    return x.mm(weight.t()) if bias is None else torch.addmm(bias, x, weight.t())


def mm_grad_input(grad: Tensor, weight: Tensor, onednn: bool) -> Tensor:
    """grad [T, out] · weight [out, in] → [T, in]."""
    # oneDNN reads its weight as [N, K]: hand it weightᵀ contiguous (a weight-sized copy, cheap next to the product)
    return _onednn(grad, weight.t().contiguous(), None) if onednn else grad.mm(weight)


def mm_grad_weight(grad: Tensor, x: Tensor, onednn: bool) -> Tensor:
    """gradᵀ [out, T] · x [T, in] → [out, in] (contiguous, the weight's layout)."""
    return _onednn(grad.t(), x.t(), None) if onednn else grad.t().mm(x)


class _Linear(torch.autograd.Function):
    """x [T, in] · weightᵀ + bias through oneDNN, forward and backward (three oneDNN products)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return mm_forward(x, weight, bias, True)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad = grad.contiguous()
        grad_x = mm_grad_input(grad, weight, True) if need[0] else None
        grad_w = mm_grad_weight(grad, x, True) if need[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and need[2] else None
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` (x [..., in] · weight [out, in]ᵀ + bias [out] → [..., out]) whose CPU fp32 products run on
    the faster backend (module docstring); elsewhere exactly ``F.linear``."""
    if not use_onednn(x, weight) or (bias is not None and bias.dtype != torch.float32):
        return F.linear(x, weight, bias)
    out = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])
