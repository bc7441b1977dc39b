"""Every registered fusion, 2 and 3 modalities: shapes, gradients, missing modalities, leaks, batch
independence, save/load. Enumerates FUSIONS, so a newly registered fusion is tested with no new code."""

from __future__ import annotations

import io

import pytest
import torch

import polymodal.fusion  # noqa: F401  (registers the fusions)
from polymodal.registry import FUSIONS
from polymodal.types import ModalityOutput

from .fusion_inputs import DIM, MODALITY_SETS, all_present, coverage_pattern, make_outputs, replace_absent

CASES = [(name, count) for name in FUSIONS.names() for count in MODALITY_SETS]
IDS = [f"{name}-{count}mod" for name, count in CASES]


def build(name: str, names: list[str], seed: int = 0):
    torch.manual_seed(seed)
    return FUSIONS.build(name, modalities=names, dim=DIM)


def check_fused(fusion, fused, batch: int) -> None:
    assert fused.pooled.shape == (batch, fusion.output_dim)
    assert torch.isfinite(fused.pooled).all()
    if fused.tokens is not None:
        assert fused.mask is not None and fused.mask.dtype == torch.bool
        assert fused.tokens.shape[:2] == fused.mask.shape and fused.tokens.shape[0] == batch
        assert fused.tokens.shape[2] == DIM
        assert torch.isfinite(fused.tokens).all()


def test_every_fusion_is_registered():
    expected = {"concat", "sum", "mean", "product", "weighted", "gated", "cross_attention", "tensor",
                "low_rank_tensor", "transformer"}
    assert expected <= set(FUSIONS.names())
    assert "late" not in FUSIONS  # late fusion lives in MultimodalModel


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_shape_and_gradient_flow(name, count):
    names = MODALITY_SETS[count]
    fusion = build(name, names).train()
    pattern = coverage_pattern(names)
    outputs = make_outputs(names, pattern, requires_grad=True)
    fused = fusion(outputs)
    check_fused(fusion, fused, len(pattern[names[0]]))
    weights = torch.randn(fused.pooled.shape, generator=torch.Generator().manual_seed(1))
    (fused.pooled * weights).sum().backward()

    for param_name, param in fusion.named_parameters():
        assert param.grad is not None, f"{name}: no gradient reaches {param_name}"
        assert param.grad.abs().sum() > 0, f"{name}: gradient of {param_name} is all zero"
        assert torch.isfinite(param.grad).all()
    for modality, out in outputs.items():
        token_grad = out.tokens.grad if out.tokens.grad is not None else torch.zeros_like(out.tokens)
        pooled_grad = out.pooled.grad if out.pooled.grad is not None else torch.zeros_like(out.pooled)
        per_sample = token_grad.abs().flatten(1).sum(1) + pooled_grad.abs().sum(1)
        assert torch.isfinite(per_sample).all()
        for b, present in enumerate(out.present.tolist()):
            if present:
                assert per_sample[b] > 0, f"{name}: no gradient reaches {modality} of present sample {b}"
            else:
                assert per_sample[b] == 0, f"{name}: absent {modality} of sample {b} receives gradient"


def missing_scenarios(names: list[str]) -> dict[str, dict[str, list[bool]] | tuple]:
    batch = 4
    first, last = names[0], names[-1]
    some_absent = all_present(names, batch) | {first: [True, False, True, False]}
    one_all_absent = all_present(names, batch) | {last: [False] * batch}
    sample_without_any = {name: [True, True, True, False] for name in names}
    nothing = {name: [False] * batch for name in names}
    return {
        "one modality absent for some samples": some_absent,
        "one modality absent for every sample": one_all_absent,
        "one sample has no modality": sample_without_any,
        "no sample has any modality": nothing,
        "one modality missing from the dict": ("drop", last),
    }


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_missing_modalities_give_finite_outputs_and_gradients(name, count):
    names = MODALITY_SETS[count]
    fusion = build(name, names).train()
    for scenario, pattern in missing_scenarios(names).items():
        if isinstance(pattern, tuple):
            outputs = make_outputs(names, all_present(names), requires_grad=True)
            outputs.pop(pattern[1])
        else:
            outputs = make_outputs(names, pattern, requires_grad=True)
        fusion.zero_grad()
        fused = fusion(outputs)
        batch = next(iter(outputs.values())).present.shape[0]
        assert fused.pooled.shape == (batch, fusion.output_dim), scenario
        assert torch.isfinite(fused.pooled).all(), f"{name}: non-finite output when {scenario}"
        if fused.tokens is not None:
            assert torch.isfinite(fused.tokens).all(), f"{name}: non-finite tokens when {scenario}"
        fused.pooled.square().sum().backward()
        grads = [p.grad for p in fusion.parameters() if p.grad is not None]
        grads += [t.grad for out in outputs.values() for t in (out.tokens, out.pooled) if t.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradient when {scenario}"


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_absent_values_do_not_leak(name, count):
    """Nothing an absent sample (or a padded token) holds may change the output — not even NaN/inf."""
    names = MODALITY_SETS[count]
    fusion = build(name, names).eval()
    outputs = make_outputs(names, coverage_pattern(names))
    with torch.no_grad():
        reference = fusion(outputs)
        garbage = torch.Generator().manual_seed(5)
        for value_fn in (lambda s: 1e3 * torch.randn(s, generator=garbage),
                         lambda s: torch.full(s, float("nan")),
                         lambda s: torch.full(s, float("inf"))):
            fused = fusion(replace_absent(outputs, value_fn))
            torch.testing.assert_close(fused.pooled, reference.pooled, atol=1e-6, rtol=0)
            if reference.tokens is not None:
                keep = reference.mask.unsqueeze(-1)
                torch.testing.assert_close(fused.tokens * keep, reference.tokens * keep, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_absent_everywhere_equals_missing_from_dict(name, count):
    """A modality with present=False for every sample is the same as a batch that does not carry it."""
    names = MODALITY_SETS[count]
    fusion = build(name, names).eval()
    pattern = coverage_pattern(names) | {names[-1]: [False] * (len(names) + 2)}
    outputs = make_outputs(names, pattern)
    without = {key: out for key, out in outputs.items() if key != names[-1]}
    with torch.no_grad():
        torch.testing.assert_close(fusion(without).pooled, fusion(outputs).pooled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_present_modalities_matter(name, count):
    """Changing a present modality changes the fused output (the fusion is not ignoring an input)."""
    names = MODALITY_SETS[count]
    fusion = build(name, names).eval()
    outputs = make_outputs(names, all_present(names))
    with torch.no_grad():
        reference = fusion(outputs).pooled
        for name_m in names:
            other = make_outputs(names, all_present(names), seed=9)[name_m]
            changed = dict(outputs) | {name_m: other}
            delta = (fusion(changed).pooled - reference).abs().sum(1)
            assert (delta > 1e-4).all(), f"{name}: output ignores {name_m}"


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_batch_independence(name, count):
    names = MODALITY_SETS[count]
    fusion = build(name, names).eval()
    pattern = coverage_pattern(names)
    batch = len(pattern[names[0]])
    outputs = make_outputs(names, pattern)
    other = make_outputs(names, {n: [True] * batch for n in names}, seed=3)
    with torch.no_grad():
        reference = fusion(outputs).pooled
        for i in range(batch):
            # Everyone but sample i gets new values and a new presence pattern.
            mixed = {}
            for n in names:
                keep = torch.zeros(batch, dtype=torch.bool)
                keep[i] = True
                a, b = outputs[n], other[n]
                mixed[n] = ModalityOutput(
                    tokens=torch.where(keep[:, None, None], a.tokens, b.tokens),
                    mask=torch.where(keep[:, None], a.mask, b.mask),
                    pooled=torch.where(keep[:, None], a.pooled, b.pooled),
                    present=torch.where(keep, a.present, b.present),
                )
            torch.testing.assert_close(fusion(mixed).pooled[i], reference[i], atol=1e-6, rtol=0)
            alone = {n: ModalityOutput(o.tokens[i : i + 1], o.mask[i : i + 1], o.pooled[i : i + 1],
                                       o.present[i : i + 1]) for n, o in outputs.items()}
            torch.testing.assert_close(fusion(alone).pooled[0], reference[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,count", CASES, ids=IDS)
def test_state_dict_round_trip(name, count):
    names = MODALITY_SETS[count]
    source = build(name, names, seed=1)
    with torch.no_grad():  # move away from the initialisation, so a silently skipped load is caught
        for param in source.parameters():
            param.add_(0.1 * torch.randn_like(param))
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = build(name, names, seed=2)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    outputs = make_outputs(names, coverage_pattern(names))
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(outputs).pooled, source.eval()(outputs).pooled, atol=0, rtol=0)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_bad_inputs_give_clear_errors(name):
    names = MODALITY_SETS[2]
    fusion = build(name, names)
    outputs = make_outputs(names, all_present(names))
    with pytest.raises(ValueError, match="unexpected \\['text'\\]"):
        fusion(outputs | make_outputs(["text"], {"text": [True] * 4}))
    with pytest.raises(ValueError, match="got no modality"):
        fusion({})
    with pytest.raises(ValueError, match="'image'.*D=16"):
        fusion(outputs | make_outputs(["image"], {"image": [True] * 4}, dim=8))
    with pytest.raises(TypeError, match=f"fusion '{name}'.*no_such_option"):
        FUSIONS.build(name, modalities=names, dim=DIM, no_such_option=1)
