"""Connectors: shapes, masks, the published formulas, and a contract every registered connector meets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polymodal.connectors import MLPProjector, PerceiverResampler, build_connector
from polymodal.registry import CONNECTORS

D_ENC, D_LM = 12, 20


def inputs(batch: int = 3, tokens: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, tokens, D_ENC)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[1, 3:] = False  # a shorter attachment
    mask[2] = False  # an absent one
    return x, mask


@pytest.mark.parametrize("name", CONNECTORS.names())
def test_contract_shapes_masks_gradients_and_state(name):
    connector = build_connector(name, D_ENC, D_LM)
    x, mask = inputs()
    x[2] = float("nan")  # garbage where absent must not leak
    x[1, 3:] = 1e6
    out = connector(x, mask)
    m = connector.num_tokens(x.shape[1])
    assert out.tokens.shape == (3, m, D_LM) and out.mask.shape == (3, m) and out.mask.dtype == torch.bool
    assert torch.isfinite(out.tokens).all()
    assert not out.mask[2].any() and (out.tokens[2] == 0).all()
    assert (out.tokens[~out.mask] == 0).all()
    out.tokens.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in connector.parameters())
    clone = build_connector(name, D_ENC, D_LM)
    clone.load_state_dict(connector.state_dict())
    clean = torch.nan_to_num(x, nan=0.0)
    assert torch.equal(clone(clean, mask).tokens, connector(clean, mask).tokens)
    # padding values do not matter: only real tokens are read
    other = clean.clone()
    other[1, 3:] = -5.0
    assert torch.allclose(connector(other, mask).tokens, connector(clean, mask).tokens, atol=1e-6)


def test_registry_names_and_errors():
    assert {"mlp", "resampler"} <= set(CONNECTORS.names())
    with pytest.raises(KeyError, match="Did you mean 'resampler'"):
        build_connector("resampler2", D_ENC, D_LM)
    with pytest.raises(TypeError, match="connector 'mlp'"):
        build_connector("mlp", D_ENC, D_LM, widht=3)
    with pytest.raises(ValueError, match="input_dim"):
        build_connector("mlp", 0, D_LM)
    with pytest.raises(ValueError, match="D_enc=12"):
        build_connector("mlp", D_ENC, D_LM)(torch.randn(2, 3, 7))


def test_mlp_is_llava15_linear_gelu_linear():
    proj = MLPProjector(D_ENC, D_LM)
    x, mask = inputs()
    first, second = proj.net[0], proj.net[2]
    expected = F.linear(F.gelu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)
    out = proj(x, mask)
    assert torch.allclose(out.tokens[mask], expected[mask], atol=1e-6)
    assert torch.equal(out.mask, mask)
    assert [type(layer).__name__ for layer in proj.net] == ["Linear", "GELU", "Linear"]
    linear = MLPProjector(D_ENC, D_LM, depth=1)  # LLaVA-1's single projection
    assert [type(layer).__name__ for layer in linear.net] == ["Linear"]
    assert MLPProjector(D_ENC, D_LM, depth=3, hidden_dim=7).net[0].out_features == 7


def test_resampler_fixed_token_count_and_permutation_invariance():
    resampler = PerceiverResampler(D_ENC, D_LM, num_tokens=6, depth=2, heads=2, width=16)
    for n in (1, 5, 40):
        out = resampler(torch.randn(2, n, D_ENC))
        assert out.tokens.shape == (2, 6, D_LM) and out.mask.all()
    x = torch.randn(2, 9, D_ENC)
    perm = torch.randperm(9)
    # no positions inside the resampler: the set of input tokens, not their order, decides the output
    assert torch.allclose(resampler(x).tokens, resampler(x[:, perm]).tokens, atol=1e-5)


def test_resampler_matches_a_hand_written_flamingo_block():
    resampler = PerceiverResampler(D_ENC, D_LM, num_tokens=3, depth=1, heads=1, width=8).eval()
    x = torch.randn(2, 4, D_ENC)
    block = resampler.blocks[0]
    features = resampler.input_proj(x)
    latents = resampler.queries.expand(2, -1, -1)
    q_in = block.norm_latents(latents)
    kv = torch.cat([block.norm_features(features), q_in], 1)
    w_q, w_k, w_v = block.attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = block.attention.in_proj_bias.chunk(3)
    q, k, v = F.linear(q_in, w_q, b_q), F.linear(kv, w_k, b_k), F.linear(kv, w_v, b_v)
    attn = torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, -1) @ v
    latents = latents + block.attention.out_proj(attn)
    latents = latents + block.ffn(block.norm_ffn(latents))
    expected = resampler.output_proj(resampler.norm(latents))
    assert torch.allclose(resampler(x).tokens, expected, atol=1e-5)


def test_resampler_rejects_bad_options():
    with pytest.raises(ValueError, match="heads"):
        PerceiverResampler(D_ENC, D_LM, heads=3, width=16)
    with pytest.raises(ValueError, match="num_tokens"):
        PerceiverResampler(D_ENC, D_LM, num_tokens=0)
