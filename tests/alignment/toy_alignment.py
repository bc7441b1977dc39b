"""A bag-of-words alignment model whose embeddings are known by construction (shared by the eval/zero-shot tests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polymodal.config import AlignmentConfig, from_dict
from polymodal.types import ModalityOutput


class WordProcessor:
    """Each text → the ids of its words in ``vocab``; padded with -1."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def __call__(self, text):
        return {"input_ids": torch.tensor([self.vocab[w] for w in text.split()])}

    def collate(self, samples):
        return {"input_ids": torch.nn.utils.rnn.pad_sequence([s["input_ids"] for s in samples], batch_first=True,
                                                             padding_value=-1)}


class BagOfWordsModel(torch.nn.Module):
    """Text embedding = normalised sum of the rows of ``words`` for its ids; every other modality is given
    directly as its embedding (inputs["emb"])."""

    def __init__(self, words: torch.Tensor, vocab: dict[str, int], modalities: list[str]):
        super().__init__()
        self.words = words
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))
        self.config = from_dict(AlignmentConfig, {"modalities": {name: {"kind": name} for name in modalities}})
        self.modality_names = list(modalities)
        self.processors = {"text": WordProcessor(vocab)}

    def encode_modality(self, name, inputs, present):
        if name == "text":
            ids = inputs["input_ids"]
            pooled = (self.words[ids.clamp_min(0)] * (ids >= 0).unsqueeze(-1)).sum(1)
        else:
            pooled = inputs["emb"]
        return ModalityOutput(tokens=pooled[:, None], mask=present[:, None], pooled=pooled, present=present)

    def embed(self, name, out):
        return F.normalize(out.pooled, dim=-1)

    def encode(self, batch, modality):
        return self.embed(modality, self.encode_modality(modality, batch.inputs[modality], batch.present[modality]))

    def scale(self):
        return self.logit_scale.exp()
