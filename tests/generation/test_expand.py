"""Placeholder expansion and the token loss, checked position by position and against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.connectors import ConnectorOutput
from polymodal.data.errors import DataError
from polymodal.generation import IGNORE_INDEX, count_answer_tokens, expand_placeholders, token_loss

IMG, AUD, PAD = 90, 91, 0
D = 4


def embed(ids: torch.Tensor) -> torch.Tensor:
    """A recognisable embedding: every coordinate is the token id."""
    return ids.unsqueeze(-1).float().expand(*ids.shape, D).clone()


def features(count: int, tokens: int, base: float, lengths: list[int] | None = None) -> ConnectorOutput:
    values = base + torch.arange(count * tokens, dtype=torch.float).view(count, tokens, 1).expand(-1, -1, D)
    mask = torch.ones(count, tokens, dtype=torch.bool)
    for k, n in enumerate(lengths or []):
        mask[k, n:] = False
    return ConnectorOutput(values.clone(), mask)


def batch_of(rows: list[list[int]], labels: list[list[int]] | None = None):
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), PAD)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    lab = torch.full((len(rows), length), IGNORE_INDEX)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
        if labels:
            lab[b, : len(row)] = torch.tensor(labels[b])
    return ids, mask, (lab if labels else None)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_zero_one_and_two_attachments_expand_in_place(padding_side):
    rows = [[1, 2, 3], [1, IMG, 4, 5], [1, IMG, 6, IMG, 7]]
    labels = [[-100, -100, 3], [-100, -100, -100, 5], [-100, -100, -100, -100, 7]]
    ids, mask, lab = batch_of(rows, labels)
    out = expand_placeholders(ids, mask, lab, embed(ids), {IMG: features(3, 2, 100.0)}, padding_side)
    m = 2  # connector tokens per image
    expected_len = [3, 4 - 1 + m, 5 - 2 + 2 * m]
    assert out.inputs_embeds.shape == (3, max(expected_len), D)
    assert out.attention_mask.sum(1).tolist() == expected_len
    seqs = []
    for b in range(3):
        real = out.attention_mask[b].bool()
        seqs.append(out.inputs_embeds[b][real][:, 0].tolist())
        if padding_side == "left":
            assert not out.attention_mask[b, : max(expected_len) - expected_len[b]].any()
        assert out.position_ids[b][real].tolist() == list(range(expected_len[b]))
    # image k of the batch has tokens 100 + 2k, 101 + 2k; they replace the placeholders in order
    assert seqs == [[1, 2, 3], [1, 100, 101, 4, 5], [1, 102, 103, 6, 104, 105, 7]]
    lab_seqs = [out.labels[b][out.attention_mask[b].bool()].tolist() for b in range(3)]
    assert lab_seqs == [[-100, -100, 3], [-100, -100, -100, -100, 5], [-100, -100, -100, -100, -100, -100, 7]]
    assert (out.labels[out.attention_mask == 0] == IGNORE_INDEX).all()


def test_masked_connector_tokens_are_dropped_and_modalities_interleave():
    ids, mask, _ = batch_of([[1, AUD, IMG, 2], [1, AUD, 3]])
    feats = {IMG: features(1, 3, 100.0, lengths=[2]), AUD: features(2, 4, 200.0, lengths=[1, 3])}
    out = expand_placeholders(ids, mask, None, embed(ids), feats)
    assert out.labels is None
    seqs = [out.inputs_embeds[b][out.attention_mask[b].bool()][:, 0].tolist() for b in range(2)]
    assert seqs == [[1, 200, 100, 101, 2], [1, 204, 205, 206, 3]]
    # an attachment with no real token (absent: all masked) leaves nothing behind, not even its placeholder
    ids, mask, _ = batch_of([[1, IMG, 2]])
    out = expand_placeholders(ids, mask, None, embed(ids), {IMG: features(1, 3, 100.0, lengths=[0])})
    assert out.inputs_embeds[0, :, 0].tolist() == [1, 2]


def test_gradients_reach_text_and_attachment_embeddings():
    ids, mask, _ = batch_of([[1, IMG, 2]])
    text = embed(ids).requires_grad_()
    feats = features(1, 2, 10.0)
    feats.tokens.requires_grad_()
    out = expand_placeholders(ids, mask, None, text, {IMG: feats})
    out.inputs_embeds.sum().backward()
    assert text.grad[0, :, 0].tolist() == [1.0, 0.0, 1.0]  # the placeholder's own embedding is not used
    assert (feats.tokens.grad == 1).all()


def test_placeholder_and_attachment_counts_must_agree():
    ids, mask, _ = batch_of([[1, IMG, IMG]])
    with pytest.raises(DataError, match="more placeholders"):
        expand_placeholders(ids, mask, None, embed(ids), {IMG: features(1, 2, 0.0)}, ids=["row-3"])
    ids, mask, _ = batch_of([[1, IMG]])
    with pytest.raises(DataError, match="1 attachment\\(s\\) have no placeholder"):
        expand_placeholders(ids, mask, None, embed(ids), {IMG: features(2, 2, 0.0)})


def test_token_loss_matches_a_hand_computed_case():
    # vocabulary of 3; logits chosen so that each softmax is easy to write down
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0, 1]])
    loss_sum, count = token_loss(logits, labels)
    # position 1 predicts label 0 with logits (2, 0, 0); position 2 predicts label 1 with logits (0, 1, 0)
    expected = -math.log(math.e ** 2 / (math.e ** 2 + 2)) - math.log(math.e / (math.e + 2))
    assert count.item() == 2
    assert loss_sum.item() == pytest.approx(expected, abs=1e-6)
    # the prompt position's logits (position 0, predicting an ignored label) do not matter
    logits[0, 0] = torch.tensor([100.0, -100.0, 3.0])
    logits[0, 3] = torch.tensor([-9.0, 9.0, 0.0])  # the last position predicts nothing
    assert token_loss(logits, labels)[0].item() == pytest.approx(expected, abs=1e-6)


def test_count_answer_tokens_skips_each_first_real_token():
    labels = torch.tensor([[5, 6, IGNORE_INDEX], [IGNORE_INDEX, 7, 8]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert count_answer_tokens(labels, mask) == 3
    assert token_loss(torch.zeros(2, 3, 10), labels)[1].item() == 3
