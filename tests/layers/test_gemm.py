"""polymodal.layers.gemm: oneDNN products agree with torch's BLAS ones, forward and backward, and the backend
choice follows the environment variable, the setter and the places where oneDNN must not run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.layers import FusedMLP, ResidualAttentionBlock, cpu_gemm_backend, gemm, linear, quick_gelu
from polymodal.layers import set_cpu_gemm_backend as set_backend

needs_onednn = pytest.mark.skipif(not gemm.onednn_linear_available(), reason="torch built without oneDNN")


@pytest.fixture(autouse=True)
def restore_backend(monkeypatch):
    saved = gemm._backend
    monkeypatch.setattr(gemm, "MIN_MACS", 0)  # the tests' small products take the oneDNN path too
    yield
    gemm._backend = saved


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts the products that really ran on oneDNN (equal results alone would not show which path ran)."""
    calls = []
    real = gemm._onednn
    monkeypatch.setattr(gemm, "_onednn", lambda *args: calls.append(args[0].shape) or real(*args))
    return calls


def grads_of(fn, inputs, grad):
    out = fn(*inputs)
    return out.detach(), torch.autograd.grad(out, inputs, grad)


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 6), (2, 3, 6), (6,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_onednn_matches_float64_reference(shape, bias, onednn_calls):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    w = torch.randn(5, 6, generator=gen, requires_grad=True)
    b = torch.randn(5, generator=gen, requires_grad=True) if bias else None
    inputs = [t for t in (x, w, b) if t is not None]
    grad = torch.randn(*shape[:-1], 5, generator=gen)
    set_backend("onednn")
    got, got_grads = grads_of(lambda *t: linear(t[0], t[1], t[2] if bias else None), inputs, grad)
    assert len(onednn_calls) == 3  # forward, grad input, grad weight
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    want, want_grads = grads_of(lambda *t: F.linear(t[0], t[1], t[2] if bias else None), ref_inputs, grad.double())
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    for g, r in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


@needs_onednn
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_fused_mlp_on_onednn_matches_float64_modules(act, onednn_calls):
    """The oneDNN path folds QuickGELU's 1.702 into the weights: same function, same gradients."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 8, generator=gen, requires_grad=True)
    fc1, fc2 = nn.Linear(8, 32), nn.Linear(32, 8)
    params = [x, fc1.weight, fc1.bias, fc2.weight, fc2.bias]
    grad = torch.randn(9, 8, generator=gen)
    set_backend("onednn")
    got, got_grads = grads_of(lambda *t: FusedMLP.apply(*t, act), params, grad)
    assert len(onednn_calls) == 6  # two forward products, four backward
    ref = [p.detach().double().requires_grad_() for p in params]
    act_fn = quick_gelu if act == "quick_gelu" else F.gelu
    want, want_grads = grads_of(lambda x, w1, b1, w2, b2: F.linear(act_fn(F.linear(x, w1, b1)), w2, b2), ref,
                                grad.double())
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    for g, r in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_attention_block_is_the_same_on_both_backends():
    torch.manual_seed(0)
    block = ResidualAttentionBlock(width=32, heads=4, mlp_dim=128, act="quick_gelu", eps=1e-5)
    x = torch.randn(3, 11, 32)
    results = {}
    for name in ("blas", "onednn"):
        set_backend(name)
        block.zero_grad()
        out = block(x, causal=True)
        out.square().sum().backward()
        results[name] = (out.detach(), [p.grad.clone() for p in block.parameters()])
    torch.testing.assert_close(results["onednn"][0], results["blas"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results["onednn"][1], results["blas"][1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@needs_onednn
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_onednn_stays_out_of_float64_autocast_and_traced_graphs():
    set_backend("onednn")
    x, w = torch.randn(4, 6), torch.randn(5, 6)
    assert gemm.use_onednn(x, w)
    assert not gemm.use_onednn(x.double(), w.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gemm.use_onednn(x, w)
    # an exporter (TorchScript trace, the classic ONNX path) must see plain aten ops
    traced = torch.jit.trace(lambda t: linear(t, w), (x,))
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(x), F.linear(x, w))


@needs_onednn
def test_tiny_products_stay_on_blas(monkeypatch):
    """oneDNN's fixed cost per call loses below MIN_MACS multiply-adds: small models keep BLAS."""
    monkeypatch.setattr(gemm, "MIN_MACS", 1 << 21)
    set_backend("onednn")
    assert not gemm.use_onednn(torch.randn(32, 64), torch.randn(64, 64))
    assert gemm.use_onednn(torch.randn(2, 64, 256), torch.randn(256, 256))  # 128 × 256 × 256 multiply-adds


def test_environment_variable_and_setter_choose_the_backend(monkeypatch):
    monkeypatch.setenv(gemm.ENV_VAR, "blas")
    set_backend(None)
    assert cpu_gemm_backend() == "blas"
    assert not gemm.use_onednn(torch.randn(2, 3), torch.randn(4, 3))
    monkeypatch.setenv(gemm.ENV_VAR, "fastest")
    set_backend(None)
    with pytest.warns(UserWarning, match="POLYMODAL_CPU_GEMM='fastest' is not one of onednn, blas, auto"):
        assert cpu_gemm_backend() in gemm.BACKENDS
    with pytest.raises(ValueError, match="must be one of"):
        set_backend("mkl")


def test_without_onednn_everything_takes_the_blas_path(monkeypatch):
    monkeypatch.setattr(gemm, "onednn_linear_available", lambda: False)
    monkeypatch.setenv(gemm.ENV_VAR, "onednn")
    set_backend(None)
    with pytest.warns(UserWarning, match="no oneDNN linear"):
        assert cpu_gemm_backend() == "blas"
    with pytest.raises(ValueError, match="no oneDNN linear op"):
        set_backend("onednn")
    monkeypatch.setenv(gemm.ENV_VAR, "auto")
    set_backend(None)
    assert cpu_gemm_backend() == "blas"  # the probe does not even try
