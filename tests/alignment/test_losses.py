"""Objectives against hand-computed references (numpy, float64) on tiny cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polymodal.objectives import (
    OBJECTIVES,
    ModalitySpec,
    ObjectiveSetup,
    PairInputs,
    clip_loss,
    mask_tokens,
    sample_hard_negatives,
    siglip_loss,
)
from polymodal.objectives.masked_lm import IGNORE_INDEX
from polymodal.types import ModalityOutput


def _unit(rows):
    x = np.asarray(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_ce(logits, target_probs):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -(target_probs * log_probs).sum(axis=1).mean()


A = _unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
B = _unit([[0.9, 0.1], [0.5, 0.5], [-0.2, 1.0]])


def test_clip_matches_hand_computed_symmetric_infonce():
    scale = 1 / 0.07
    logits = scale * A @ B.T
    eye = np.eye(3)
    expected = (_np_ce(logits, eye) + _np_ce(logits.T, eye)) / 2
    got = clip_loss(torch.tensor(A), torch.tensor(B), scale)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_clip_2x2_by_hand():
    # a = b = identity, scale 1: each row softmax over [1, 0] → loss = log(1 + e^-1) in both directions.
    eye = torch.eye(2, dtype=torch.float64)
    assert clip_loss(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-12)


def test_clip_label_smoothing_matches_reference():
    eps, scale = 0.1, 5.0
    logits = scale * A @ B.T
    targets = np.eye(3) * (1 - eps) + eps / 3
    expected = (_np_ce(logits, targets) + _np_ce(logits.T, targets)) / 2
    got = clip_loss(torch.tensor(A), torch.tensor(B), scale, label_smoothing=eps)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_clip_group_ids_make_same_label_samples_positives():
    groups = np.array([0, 0, 1])
    same = (groups[:, None] == groups[None, :]).astype(float)
    targets = same / same.sum(1, keepdims=True)
    logits = 3.0 * A @ B.T
    expected = (_np_ce(logits, targets) + _np_ce(logits.T, targets)) / 2
    got = clip_loss(torch.tensor(A), torch.tensor(B), 3.0, group_ids=torch.tensor(groups))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_local_loss_equals_full_loss_in_one_process():
    a, b = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1), F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    assert clip_loss(a, b, 7.0, local_loss=True).item() == pytest.approx(clip_loss(a, b, 7.0).item(), rel=1e-12)
    assert siglip_loss(a, b, 7.0, -2.0, local_loss=True).item() == pytest.approx(
        siglip_loss(a, b, 7.0, -2.0).item(), rel=1e-12)


def test_siglip_matches_direct_formula():
    scale, bias = 10.0, -10.0
    n = A.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = scale * float(A[i] @ B[j]) + bias
            total += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    expected = total / n  # big_vision: sum over the pairs, divided by the batch size
    got = siglip_loss(torch.tensor(A), torch.tensor(B), scale, bias)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_siglip_gradients_reach_scale_and_bias():
    scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    loss = siglip_loss(torch.tensor(A), torch.tensor(B), scale.exp(), bias)
    loss.backward()
    # d/d bias of Σ -log σ(z·l) / n = Σ (σ(l) - [z = 1]) / n
    logits = 10.0 * A @ B.T - 10.0
    expected = ((1 / (1 + np.exp(-logits))) - np.eye(3)).sum() / 3
    assert bias.grad.item() == pytest.approx(expected, rel=1e-9)
    assert scale.grad is not None and scale.grad.abs() > 0


# ---------------------------------------------------------------------------------------------- ITM


def test_hard_negatives_never_pick_the_positive():
    gen = torch.Generator().manual_seed(0)
    # Similarity strongly peaked on the diagonal: a sampler that ignored the exclusion would pick it ~always.
    sim = torch.eye(8) * 50 + torch.randn(8, 8, generator=gen)
    positive = torch.eye(8, dtype=torch.bool)
    counts = torch.zeros(8, 8)
    for _ in range(300):
        idx, valid = sample_hard_negatives(sim, positive, gen)
        assert valid.all()
        counts[torch.arange(8), idx] += 1
    assert counts.diagonal().sum() == 0
    # Sampling follows the softmax: the most similar negative of each row is drawn most often.
    off = sim.masked_fill(positive, float("-inf"))
    assert (counts.argmax(1) == off.argmax(1)).float().mean() >= 0.75


def test_hard_negatives_respect_groups_and_report_rows_without_negatives():
    groups = torch.tensor([0, 0, 1, 1, 2])
    positive = groups[:, None] == groups[None, :]
    positive[4] = True  # row 4: every column positive → no negative exists
    gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        idx, valid = sample_hard_negatives(torch.randn(5, 5, generator=gen), positive, gen)
        assert valid.tolist() == [True, True, True, True, False]
        assert not positive[torch.arange(4), idx[:4]].any()


def _setup(kinds=("image", "text"), dims=(6, 10), vocab=None, mask_id=None):
    mods = {
        "image": ModalitySpec("image", kinds[0], dims[0]),
        "text": ModalitySpec("text", kinds[1], dims[1], vocab_size=vocab, mask_token_id=mask_id, pad_token_id=0,
                             special_token_ids=(1, 2)),
    }
    return ObjectiveSetup(embed_dim=4, modalities=mods, pairs=[("image", "text")])


def _out(tokens, mask):
    present = torch.ones(tokens.shape[0], dtype=torch.bool)
    return ModalityOutput(tokens=tokens, mask=mask, pooled=tokens.mean(1), present=present)


def test_itm_loss_is_cross_entropy_over_positives_and_sampled_negatives():
    itm = OBJECTIVES.build("itm", setup=_setup(), width=16, heads=2)
    n = 4
    img = _out(torch.randn(n, 3, 6, requires_grad=True), torch.ones(n, 3, dtype=torch.bool))
    txt_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1] * 5, [1, 1, 1, 1, 0]], dtype=torch.bool)
    txt = _out(torch.randn(n, 5, 10, requires_grad=True), txt_mask)
    emb_a, emb_b = F.normalize(torch.randn(n, 4), dim=-1), F.normalize(torch.randn(n, 4), dim=-1)
    pair = PairInputs("image", "text", emb_a, emb_b, torch.tensor(10.0), out_a=img, out_b=txt)
    itm.generator = torch.Generator().manual_seed(3)
    loss = itm(pair)
    # Recompute by hand with the same draws: n positives, then (image, negative text), (negative image, text).
    gen = torch.Generator().manual_seed(3)
    sim = 10.0 * emb_a @ emb_b.T
    neg_t, _ = sample_hard_negatives(sim, torch.eye(n, dtype=torch.bool), gen)
    neg_i, _ = sample_hard_negatives(sim.T, torch.eye(n, dtype=torch.bool), gen)
    rows = torch.arange(n)
    i_idx, t_idx = torch.cat([rows, rows, neg_i]), torch.cat([rows, neg_t, rows])
    logits = itm.match_logits("text", "image", txt.tokens[t_idx], txt.mask[t_idx], img.tokens[i_idx], img.mask[i_idx])
    labels = torch.tensor([1] * n + [0] * (2 * n))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    loss.backward()
    assert img.tokens.grad.abs().sum() > 0 and txt.tokens.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- MLM


def test_mask_tokens_only_touches_real_non_special_tokens_with_80_10_10():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 100, (400, 32), generator=gen)
    ids[:, 0], ids[:, -1] = 1, 2  # cls / sep
    attention = torch.ones_like(ids)
    attention[:, 24:] = 0
    ids[:, 24:] = 0  # padding
    masked, labels = mask_tokens(ids, attention, mask_token_id=3, vocab_size=100, special_token_ids=(0, 1, 2),
                                 generator=gen)
    selected = labels != IGNORE_INDEX
    eligible = (attention == 1) & (ids > 2)
    assert not (selected & ~eligible).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])  # unselected positions are never changed
    rate = selected.sum() / eligible.sum()
    assert 0.13 < rate < 0.17
    as_mask = (masked[selected] == 3).float().mean()
    unchanged = (masked[selected] == ids[selected]).float().mean()
    assert 0.77 < as_mask < 0.83
    assert 0.08 < unchanged < 0.125  # 10% kept + ~1% random draws that hit the original id


class _TokenText(torch.nn.Module):
    """One output token per input id (what MLM requires of the text encoder)."""

    def __init__(self, vocab, dim):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)

    def __call__(self, name, inputs, present):
        tokens = self.embed(inputs["input_ids"])
        return _out(tokens, inputs["attention_mask"].bool())


def test_mlm_loss_is_taken_only_on_masked_positions():
    vocab = 50
    mlm = OBJECTIVES.build("mlm", setup=_setup(vocab=vocab, mask_id=3), width=16, heads=2, probability=0.3)
    text_encoder = _TokenText(vocab, 10)
    ids = torch.randint(4, vocab, (3, 8))
    ids[:, 0] = 1
    attention = torch.ones_like(ids)
    attention[0, 5:] = 0
    img = _out(torch.randn(3, 4, 6, requires_grad=True), torch.ones(3, 4, dtype=torch.bool))
    pair = PairInputs("image", "text", torch.zeros(3, 4), torch.zeros(3, 4), torch.tensor(1.0), out_a=img,
                      out_b=None, inputs_b={"input_ids": ids, "attention_mask": attention}, encode=text_encoder)
    mlm.generator = torch.Generator().manual_seed(5)
    loss = mlm(pair)
    masked, labels = mask_tokens(ids, attention, mask_token_id=3, vocab_size=vocab, special_token_ids=(1, 2, 0),
                                 probability=0.3, generator=torch.Generator().manual_seed(5))
    assert (labels != IGNORE_INDEX).any()
    text_out = text_encoder("text", {"input_ids": masked, "attention_mask": attention}, None)
    fused = mlm.fusers["text__image"](text_out.tokens, text_out.mask, img.tokens, img.mask)
    all_logits = mlm.heads["text"](fused)  # [3, 8, vocab]
    expected = F.cross_entropy(all_logits.reshape(-1, vocab), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert img.tokens.grad.abs().sum() > 0  # the prediction is conditioned on the other modality


def test_mlm_without_vocab_information_names_the_options():
    with pytest.raises(ValueError, match="mask_token_id"):
        OBJECTIVES.build("mlm", setup=_setup(vocab=None, mask_id=None))


def test_mlm_skips_pairs_without_text():
    setup = _setup(kinds=("image", "audio"))
    with pytest.raises(ValueError, match="text modality"):
        OBJECTIVES.build("mlm", setup=setup)
