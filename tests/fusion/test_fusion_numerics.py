"""Fusion maths against hand computations (the formulas of the cited papers)."""

from __future__ import annotations

import pytest
import torch

from polymodal.fusion import (
    CrossAttentionFusion,
    GatedFusion,
    LowRankTensorFusion,
    MeanFusion,
    ProductFusion,
    SumFusion,
    TensorFusion,
    TransformerFusion,
    WeightedFusion,
)
from polymodal.fusion.masking import masked_mean, masked_softmax
from polymodal.types import ModalityOutput

from .fusion_inputs import MODALITY_SETS, make_outputs

NAMES = MODALITY_SETS[3]
# sample 0: all; 1: image+text; 2: audio only; 3: none
PATTERN = {"image": [True, True, False, False], "audio": [True, False, True, False], "text": [True, True, False, False]}


def pooled_of(outputs):
    return {name: out.pooled for name, out in outputs.items()}


def test_masked_softmax_and_mean_never_nan():
    logits = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], requires_grad=True)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(logits, valid, dim=1)
    expected = torch.tensor([1.0, 0.0, 3.0]).exp() * torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(weights[0], expected / expected.sum())
    assert torch.equal(weights[1], torch.zeros(3))
    weights.sum().backward()
    assert torch.isfinite(logits.grad).all()
    values = torch.tensor([[[2.0], [float("nan")]], [[5.0], [7.0]]])
    mean = masked_mean(values, torch.tensor([[[True], [False]], [[False], [False]]]), dim=1)
    torch.testing.assert_close(mean, torch.tensor([[2.0], [0.0]]))


def test_sum_and_mean_over_present_match_manual():
    outputs = make_outputs(NAMES, PATTERN)
    p = pooled_of(outputs)
    mean = MeanFusion(NAMES, 16)(outputs).pooled
    total = SumFusion(NAMES, 16)(outputs).pooled
    torch.testing.assert_close(mean[0], (p["image"][0] + p["audio"][0] + p["text"][0]) / 3)
    torch.testing.assert_close(mean[1], (p["image"][1] + p["text"][1]) / 2)
    torch.testing.assert_close(mean[2], p["audio"][2])
    torch.testing.assert_close(mean[3], torch.zeros(16))
    torch.testing.assert_close(total[1], p["image"][1] + p["text"][1])


def test_product_over_present_matches_manual():
    outputs = make_outputs(NAMES, PATTERN)
    p = pooled_of(outputs)
    fused = ProductFusion(NAMES, 16, normalize=False)(outputs).pooled
    torch.testing.assert_close(fused[0], p["image"][0] * p["audio"][0] * p["text"][0])
    torch.testing.assert_close(fused[1], p["image"][1] * p["text"][1])  # absent audio = identity
    torch.testing.assert_close(fused[2], p["audio"][2])
    torch.testing.assert_close(fused[3], torch.zeros(16))
    normalized = ProductFusion(NAMES, 16)  # LayerNorm factors: unit scale whatever the input scale
    big = {n: ModalityOutput(o.tokens, o.mask, o.pooled * 1e3, o.present) for n, o in outputs.items()}
    torch.testing.assert_close(normalized(big).pooled, normalized(outputs).pooled, atol=1e-4, rtol=1e-4)


def test_weighted_renormalises_over_present():
    fusion = WeightedFusion(NAMES, 16)
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([[0.5], [-1.0], [2.0]]))
    outputs = make_outputs(NAMES, PATTERN)
    p = pooled_of(outputs)
    fused = fusion(outputs).pooled
    w = torch.tensor([0.5, -1.0, 2.0]).exp()
    torch.testing.assert_close(fused[0], (w[0] * p["image"][0] + w[1] * p["audio"][0] + w[2] * p["text"][0]) / w.sum())
    torch.testing.assert_close(fused[1], (w[0] * p["image"][1] + w[2] * p["text"][1]) / (w[0] + w[2]))
    torch.testing.assert_close(fused[2], p["audio"][2])  # a lone modality gets weight 1
    torch.testing.assert_close(fused[3], torch.zeros(16))
    reported = fusion.modality_weights()
    assert reported["text"] == pytest.approx(float(w[2] / w.sum()), rel=1e-6)


def test_gated_two_modalities_is_the_gmu_formula():
    """Arevalo et al. 2017: h = z ⊙ tanh(W_1 x_1) + (1 − z) ⊙ tanh(W_2 x_2), z = σ(W_z [x_1; x_2])."""
    names = MODALITY_SETS[2]
    fusion = GatedFusion(names, 16)
    pattern = {"image": [True, True, False], "audio": [True, False, True]}
    outputs = make_outputs(names, pattern)
    x1, x2 = outputs["image"].pooled, outputs["audio"].pooled
    h1, h2 = torch.tanh(fusion.candidates[0](x1)), torch.tanh(fusion.candidates[1](x2))
    g = fusion.gate(torch.cat([x1, x2], -1)).view(-1, 2, 16)
    z = torch.sigmoid(g[:, 0] - g[:, 1])
    fused = fusion(outputs).pooled
    torch.testing.assert_close(fused[0], z[0] * h1[0] + (1 - z[0]) * h2[0])
    torch.testing.assert_close(fused[1], h1[1])  # audio absent: the gate gives image everything
    torch.testing.assert_close(fused[2], h2[2])


@pytest.mark.parametrize("count", [2, 3])
def test_tensor_fusion_with_tensor_dim_1_is_the_outer_product(count):
    names = MODALITY_SETS[count]
    fusion = TensorFusion(names, 16, tensor_dim=1)
    pattern = {n: [True, True] for n in names} | {"audio": [True, False]}
    outputs = make_outputs(names, pattern)
    # z_m scalars; the absent audio of sample 1 has z = 0 (its "1" keeps the other terms alive)
    z = [fusion.projections[m](outputs[n].pooled).squeeze(-1) * outputs[n].present for m, n in enumerate(names)]
    a, b = z[0], z[1]
    if count == 2:  # (a; 1) ⊗ (b; 1) = [ab, a, b, 1]
        terms = torch.stack([a * b, a, b, torch.ones_like(a)], dim=-1)
    else:  # (a; 1) ⊗ (b; 1) ⊗ (c; 1), first index slowest
        c = z[2]
        one = torch.ones_like(a)
        terms = torch.stack([a * b * c, a * b, a * c, a, b * c, b, c, one], dim=-1)
    expected = terms @ fusion.out.weight.T + fusion.out.bias
    torch.testing.assert_close(fusion(outputs).pooled, expected)
    a_index = 1 if count == 2 else 3
    assert terms[1, 0].item() == 0.0 and terms[1, a_index].item() != 0.0  # a·b(·c) vanishes, unimodal a survives


def test_low_rank_tensor_equals_the_full_tensor_it_factorises():
    """LMF (Liu et al. 2018): h = Σ_i λ_i ∏_m (z_m W_m^(i)) equals contracting Z = z_1 ⊗ z_2 with
    W = Σ_i λ_i W_1^(i) ⊗ W_2^(i)."""
    names, dim = MODALITY_SETS[2], 16
    fusion = LowRankTensorFusion(names, dim, rank=3)
    with torch.no_grad():
        fusion.rank_weights.copy_(torch.tensor([0.7, -0.2, 1.3]))
        fusion.bias.normal_()
    outputs = make_outputs(names, {"image": [True, True], "audio": [True, False]})
    ones = torch.ones(2, 1)
    z1 = torch.cat([outputs["image"].pooled, ones], -1)
    z2 = torch.cat([outputs["audio"].pooled * outputs["audio"].present[:, None], ones], -1)  # absent → (0; 1)
    w1, w2 = fusion.factors[0], fusion.factors[1]  # [r, D+1, D]
    full = torch.einsum("r,rao,rbo->abo", fusion.rank_weights, w1, w2)  # [D+1, D+1, D]
    expected = torch.einsum("ba,bc,aco->bo", z1, z2, full) + fusion.bias
    torch.testing.assert_close(fusion(outputs).pooled, expected, atol=1e-5, rtol=1e-4)


def test_cross_attention_without_partner_is_the_unimodal_stream():
    """A stream whose partner is absent gets no cross-attention update: the same as having no partner."""
    names = MODALITY_SETS[2]
    fusion = CrossAttentionFusion(names, 16, layers=2, dropout=0.0).eval()
    outputs = make_outputs(names, {"image": [True, True], "audio": [True, False]})
    fused = fusion(outputs)
    alone = fusion({"image": outputs["image"]})
    torch.testing.assert_close(fused.pooled[1], alone.pooled[1], atol=1e-6, rtol=0)
    assert not torch.allclose(fused.pooled[0], alone.pooled[0], atol=1e-3)  # with a partner it differs
    assert fused.tokens.shape == (2, 5 + 7, 16)
    assert torch.equal(fused.mask, torch.cat([outputs["image"].mask, outputs["audio"].mask], 1))


def test_transformer_cls_is_input_independent_when_nothing_is_present():
    fusion = TransformerFusion(NAMES, 16).eval()
    outputs = make_outputs(NAMES, {n: [False, False, True] for n in NAMES})
    fused = fusion(outputs)
    torch.testing.assert_close(fused.pooled[0], fused.pooled[1], atol=1e-6, rtol=0)
    assert not torch.allclose(fused.pooled[0], fused.pooled[2], atol=1e-3)
    assert fused.tokens.shape == (3, 5 + 7 + 3, 16) and not fused.mask[:2].any()


def test_option_errors_name_the_fusion_and_option():
    with pytest.raises(ValueError, match="'transformer'.*dim 16 is not divisible by heads 5"):
        TransformerFusion(NAMES, 16, heads=5)
    with pytest.raises(ValueError, match="'low_rank_tensor'.*'rank'"):
        LowRankTensorFusion(NAMES, 16, rank=0)
    with pytest.raises(ValueError, match="'cross_attention'.*'pool'"):
        CrossAttentionFusion(NAMES, 16, pool="max")
    with pytest.raises(ValueError, match="low_rank_tensor"):
        TensorFusion([f"m{i}" for i in range(8)], 16, tensor_dim=16)
