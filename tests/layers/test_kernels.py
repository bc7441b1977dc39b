"""polymodal.layers kernels against plain PyTorch references: same outputs and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.layers import FusedMLP, LayerNormFp32, ResidualAttentionBlock, Transformer, quick_gelu


def test_quick_gelu_is_clip_formula():
    """OpenAI CLIP's QuickGELU: x * sigmoid(1.702 x)."""
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_fused_mlp_matches_autograd_through_modules(act):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    fc1, fc2 = nn.Linear(6, 24).double(), nn.Linear(24, 6).double()
    reference_act = quick_gelu if act == "quick_gelu" else F.gelu
    want = fc2(reference_act(fc1(x)))
    grad = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    want_grads = torch.autograd.grad(want, [x, fc1.weight, fc1.bias, fc2.weight, fc2.bias], grad)
    got = FusedMLP.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, act)
    got_grads = torch.autograd.grad(got, [x, fc1.weight, fc1.bias, fc2.weight, fc2.bias], grad)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10)


def test_layernorm_fp32_upcasts_low_precision_inputs():
    norm = LayerNormFp32(8)
    x = torch.randn(3, 8) * 100
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.layer_norm(x.bfloat16().float(), (8,)), atol=1e-2, rtol=1e-2)


def test_attention_block_matches_a_plain_pre_ln_block_and_its_one_query_path():
    """x + MHA(ln_1(x)); x + MLP(ln_2(x)) with nn.MultiheadAttention as the reference (open_clip's layout)."""
    torch.manual_seed(0)
    block = ResidualAttentionBlock(width=16, heads=4, mlp_dim=32, act="gelu", eps=1e-5).double().eval()
    mha = nn.MultiheadAttention(16, 4, batch_first=True).double()
    mha.in_proj_weight.data.copy_(block.qkv.weight)
    mha.in_proj_bias.data.copy_(block.qkv.bias)
    mha.out_proj.load_state_dict(block.out_proj.state_dict())
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True = masked, nn.MultiheadAttention's convention
    for is_causal in (False, True):
        h = block.ln_1(x)
        y = x + mha(h, h, h, attn_mask=causal if is_causal else None, need_weights=False)[0]
        want = y + block.fc2(F.gelu(block.fc1(block.ln_2(y))))
        torch.testing.assert_close(block(x, causal=is_causal), want, atol=1e-10, rtol=1e-10)
    full = block(x, causal=True)
    index = torch.tensor([4, 2])
    keys = torch.arange(5)[None] <= index[:, None]
    torch.testing.assert_close(block.forward_query(x, index, keys), full[torch.arange(2), index],
                               atol=1e-10, rtol=1e-10)


def test_transformer_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = Transformer(width=8, layers=2, heads=2, mlp_ratio=2.0, act="quick_gelu", eps=1e-5).double().train()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x).square().sum().backward()
    for a, b in zip(plain, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
