"""Image-text matching (ITM, ALBEF/BLIP): is this (a, b) pair matched? Binary CE over a fused representation.

For a pair batch of n samples the objective scores 3n fused pairs: the n positives, n (a_i, hard negative b)
and n (hard negative a, b_j). Hard negatives are drawn from the in-batch similarity softmax with the positive
(and, with ``labels_as_positives``, every same-label sample) excluded, as in ALBEF: similar-but-wrong pairs
are sampled more often, which is what makes the matching task informative.

Negatives come from this rank's rows only (token tensors are not gathered across ranks).
The fused representation: the query modality's tokens (the text member of the pair when there is one)
cross-attend to the other modality's tokens; the masked mean of the fused tokens feeds a 2-way classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoders.base import masked_mean
from ..registry import OBJECTIVES
from .base import Objective, ObjectiveSetup, PairInputs, same_group, zero_loss
from .cross_attention import CrossModalEncoder, pair_key


def sample_hard_negatives(similarity: Tensor, positive: Tensor, generator: torch.Generator | None = None
                          ) -> tuple[Tensor, Tensor]:
    """For each row, draw one column ∝ softmax(similarity row) among the non-positive columns.

    similarity [n, m] (already temperature-scaled), positive [n, m] bool → (indices [n] long, valid [n] bool).
    ``valid`` is False for rows whose every column is positive (no negative exists); their index is 0.
    """
    with torch.no_grad():
        # Softmax over the negatives only: the same distribution as ALBEF's "softmax, zero the positive,
        # renormalise", but it does not underflow to all-zero when the positive dominates the row.
        valid = ~positive.all(dim=1)
        weights = similarity.float().masked_fill(positive, float("-inf")).softmax(dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)
        indices = torch.zeros(similarity.shape[0], dtype=torch.long, device=similarity.device)
        if valid.any():
            indices[valid] = torch.multinomial(weights[valid], 1, generator=generator).squeeze(1)
    return indices, valid


def query_and_context(a: str, b: str, kinds: dict[str, str]) -> tuple[str, str]:
    """Text queries the other modality (ALBEF); for non-text pairs the second member queries the first."""
    if kinds.get(a) == "text" and kinds.get(b) != "text":
        return a, b
    return b, a


@OBJECTIVES.register("itm")
class MatchingObjective(Objective):
    """Binary matched / unmatched classification over a cross-attention fusion, with hard negatives."""

    def __init__(self, setup: ObjectiveSetup, width: int = 128, depth: int = 1, heads: int = 4,
                 dropout: float = 0.0, labels_as_positives: bool = False):
        super().__init__(setup)
        self.labels_as_positives = labels_as_positives
        kinds = {name: spec.kind for name, spec in setup.modalities.items()}
        self.fusers = nn.ModuleDict()
        for a, b in setup.pairs:
            query, context = query_and_context(a, b, kinds)
            self.fusers[pair_key(query, context)] = CrossModalEncoder(
                setup.modalities[query].token_dim, setup.modalities[context].token_dim, width, depth, heads, dropout
            )
        self.classifier = nn.Linear(width, 2)
        self.kinds = kinds
        self.generator: torch.Generator | None = None  # tests set a seeded generator

    def match_logits(self, query: str, context: str, q_tokens: Tensor, q_mask: Tensor, c_tokens: Tensor,
                     c_mask: Tensor) -> Tensor:
        """Matching logits [n, 2] (column 1 = matched) for n (query, context) token sequences."""
        fused = self.fusers[pair_key(query, context)](q_tokens, q_mask, c_tokens, c_mask)
        return self.classifier(masked_mean(fused, q_mask.bool()))

    def count(self, pair: PairInputs) -> int:
        """Scored (a, b) pairs: n positives + one negative per row and per column that has one (0 when n < 2)."""
        n = len(pair)
        if n < 2:
            return 0
        positive = self._positive(pair, n)
        return n + int((~positive.all(dim=1)).sum()) + int((~positive.all(dim=0)).sum())

    def _positive(self, pair: PairInputs, n: int) -> Tensor:
        groups = pair.group_ids if self.labels_as_positives else None
        return same_group(groups, groups, n, n, 0, pair.emb_a.device)

    def forward(self, pair: PairInputs) -> Tensor | None:
        if pair.out_a is None or pair.out_b is None:
            raise ValueError("itm needs the encoders' token outputs (PairInputs.out_a / out_b)")
        n = len(pair)
        if n < 2:  # no in-batch negative exists
            return zero_loss(pair.emb_a, pair.emb_b, pair.out_a.tokens, pair.out_b.tokens)
        positive = self._positive(pair, n)
        with torch.no_grad():
            similarity = pair.logit_scale * pair.emb_a @ pair.emb_b.T
        neg_b, valid_b = sample_hard_negatives(similarity, positive, self.generator)  # a_i with a wrong b
        neg_a, valid_a = sample_hard_negatives(similarity.T, positive.T, self.generator)  # wrong a with b_j
        rows = torch.arange(n, device=similarity.device)
        index_a = torch.cat([rows, rows[valid_b], neg_a[valid_a]])
        index_b = torch.cat([rows, neg_b[valid_b], rows[valid_a]])
        labels = torch.cat([torch.ones(n), torch.zeros(int(valid_b.sum()) + int(valid_a.sum()))]).long()
        query, context = query_and_context(pair.a, pair.b, self.kinds)
        outs = {pair.a: (pair.out_a, index_a), pair.b: (pair.out_b, index_b)}
        (q_out, q_idx), (c_out, c_idx) = outs[query], outs[context]
        logits = self.match_logits(query, context, q_out.tokens[q_idx], q_out.mask[q_idx],
                                   c_out.tokens[c_idx], c_out.mask[c_idx])
        return F.cross_entropy(logits, labels.to(logits.device))
