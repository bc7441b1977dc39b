"""The batched (gather) placeholder expansion against a plain per-sample loop: identical values, gradients and
errors on random batches (several modalities, masked connector tokens, absent attachments, both paddings), and
a backward whose cost grows linearly with the batch (the loop's grew quadratically)."""

from __future__ import annotations

import random

import pytest
import torch

from polymodal.connectors import ConnectorOutput
from polymodal.data.errors import DataError
from polymodal.generation import IGNORE_INDEX, expand_placeholders

PAD, IMG, AUD, D = 0, 3, 4, 5


def reference(input_ids, attention_mask, labels, text_embeds, features, padding_side, pad_id=PAD):
    """The definition, one sample at a time: each placeholder (in batch, then text order per token id) is
    replaced by the real tokens of the next attachment of its modality; rows are re-padded."""
    cursor = dict.fromkeys(features, 0)
    rows = []
    for b in range(input_ids.shape[0]):
        embeds, ids, labs = [], [], []
        for i in range(input_ids.shape[1]):
            if not attention_mask[b, i]:
                continue
            token = int(input_ids[b, i])
            if token in features:
                found, k = features[token], cursor[token]
                cursor[token] += 1
                for j in range(found.tokens.shape[1]):
                    if found.mask[k, j]:
                        embeds.append(found.tokens[k, j])
                        ids.append(token)
                        labs.append(IGNORE_INDEX)
            else:
                embeds.append(text_embeds[b, i])
                ids.append(token)
                labs.append(int(labels[b, i]) if labels is not None else IGNORE_INDEX)
        rows.append((embeds, ids, labs))
    length = max(len(r[0]) for r in rows)
    batch = len(rows)
    out = text_embeds.new_zeros(batch, length, D)
    out_ids = torch.full((batch, length), pad_id)
    out_labels = torch.full((batch, length), IGNORE_INDEX)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for b, (embeds, ids, labs) in enumerate(rows):
        start = length - len(embeds) if padding_side == "left" else 0
        for n, (e, t, lab) in enumerate(zip(embeds, ids, labs)):
            out[b, start + n] = e
            out_ids[b, start + n] = t
            out_labels[b, start + n] = lab
            mask[b, start + n] = 1
    return out, out_ids, (out_labels if labels is not None else None), mask


def random_batch(seed: int):
    """Rows of text with 0–3 image / audio placeholders at random places, right-padded; connector outputs with
    random real lengths (some attachments entirely masked, i.e. absent)."""
    rng = random.Random(seed)
    batch = rng.randint(1, 6)
    rows, counts = [], {IMG: 0, AUD: 0}
    for _ in range(batch):
        row = [1] + [rng.randint(10, 50) for _ in range(rng.randint(0, 7))]
        for token in (IMG, AUD):
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                row.insert(rng.randint(1, len(row)), token)
                counts[token] += 1
        rows.append(row)
    width = max(map(len, rows)) + rng.randint(0, 2)
    ids = torch.full((batch, width), PAD)
    mask = torch.zeros(batch, width, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
        labels[b, : len(row)] = torch.where(torch.rand(len(row)) < 0.5, torch.tensor(row), IGNORE_INDEX)
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for token, per in ((IMG, 3), (AUD, 4)):
        if counts[token]:
            lengths = [rng.randint(0, per) for _ in range(counts[token])]
            keep = torch.arange(per).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
            features[token] = ConnectorOutput(torch.randn(counts[token], per, D, generator=generator), keep)
    return ids, mask, labels, torch.randn(batch, width, D, generator=generator), features


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_matches_the_per_sample_definition_values_and_gradients(seed, padding_side):
    ids, mask, labels, text, features = random_batch(seed)
    text.requires_grad_(True)
    for f in features.values():
        f.tokens.requires_grad_(True)
    out = expand_placeholders(ids, mask, labels, text, features, padding_side, pad_id=PAD)
    ref, ref_ids, ref_labels, ref_mask = reference(ids, mask, labels, text, features, padding_side)
    assert torch.equal(out.inputs_embeds, ref)
    assert torch.equal(out.input_ids, ref_ids) and torch.equal(out.labels, ref_labels)
    assert torch.equal(out.attention_mask, ref_mask) and out.attention_mask.dtype == mask.dtype
    assert torch.equal(out.position_ids, (ref_mask.cumsum(-1) - 1).clamp_min(0))
    # the same gradients reach the text embeddings and every connector token (zero where dropped)
    weights = torch.randn(out.inputs_embeds.shape, generator=torch.Generator().manual_seed(seed))
    leaves = [text, *(f.tokens for f in features.values())]
    got = torch.autograd.grad((out.inputs_embeds * weights).sum(), leaves)
    want = torch.autograd.grad((ref * weights).sum(), leaves)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_without_labels_or_attachments_only_repads():
    ids = torch.tensor([[1, 20, 21, PAD], [1, 22, PAD, PAD]])
    mask = (ids != PAD).long()
    text = torch.randn(2, 4, D)
    out = expand_placeholders(ids, mask, None, text, {}, "left", pad_id=7)
    assert out.labels is None
    assert out.input_ids.tolist() == [[1, 20, 21], [7, 1, 22]]
    assert out.attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert out.position_ids.tolist() == [[0, 1, 2], [0, 0, 1]]
    assert torch.equal(out.inputs_embeds[1, 1:], text[1, :2]) and not out.inputs_embeds[1, 0].any()


def test_placeholder_in_padding_is_not_counted():
    """A placeholder id under a zero attention mask is padding, not a request for an attachment."""
    ids = torch.tensor([[1, IMG, 20, IMG]])
    mask = torch.tensor([[1, 1, 1, 0]])
    feats = {IMG: ConnectorOutput(torch.ones(1, 2, D), torch.ones(1, 2, dtype=torch.bool))}
    out = expand_placeholders(ids, mask, None, torch.zeros(1, 4, D), feats)
    assert out.input_ids.tolist() == [[1, IMG, IMG, 20]]


def test_errors_name_the_first_sample_without_an_attachment_and_count_leftovers():
    ids = torch.tensor([[1, IMG, 20], [1, AUD, IMG], [1, IMG, AUD]])
    mask = torch.ones_like(ids)
    text = torch.zeros(3, 3, D)
    one = lambda k: ConnectorOutput(torch.zeros(k, 2, D), torch.ones(k, 2, dtype=torch.bool))  # noqa: E731
    # one image for three placeholders: the second one, in sample "b", finds none left
    with pytest.raises(DataError, match=r"sample b: more placeholders \(token id 3\) than the 1 attachment"):
        expand_placeholders(ids, mask, None, text, {IMG: one(1), AUD: one(2)}, ids=["a", "b", "c"])
    # audio runs out at the third sample (index 2 without ids), images are fine
    with pytest.raises(DataError, match=r"sample 2: more placeholders \(token id 4\) than the 1 attachment"):
        expand_placeholders(ids, mask, None, text, {IMG: one(3), AUD: one(1)})
    with pytest.raises(DataError, match=r"3 attachment\(s\) have no placeholder .*token ids \[3, 4\]"):
        expand_placeholders(ids, mask, None, text, {IMG: one(5), AUD: one(3)})


def test_backward_cost_grows_linearly_with_the_batch():
    """The gradient of the expansion is one scatter: no per-sample tensor the size of the whole batch. Checked by
    the memory the backward allocates (deterministic, unlike a timing): 64 samples need ~8× what 8 need."""
    from torch.profiler import ProfilerActivity, profile

    def backward_bytes(batch: int) -> int:
        ids = torch.randint(10, 50, (batch, 40))
        ids[:, 1] = IMG
        mask = torch.ones_like(ids)
        text = torch.randn(batch, 40, 64, requires_grad=True)
        feats = {IMG: ConnectorOutput(torch.randn(batch, 17, 64, requires_grad=True),
                                      torch.ones(batch, 17, dtype=torch.bool))}
        out = expand_placeholders(ids, mask, None, text, feats).inputs_embeds.sum()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out.backward()
        return sum(e.nbytes() for e in prof.profiler.kineto_results.events()
                   if e.name() == "[memory]" and e.nbytes() > 0)

    small, large = backward_bytes(8), backward_bytes(64)
    assert large < 12 * small, (small, large)  # the per-sample loop allocated ~64× (quadratic)
