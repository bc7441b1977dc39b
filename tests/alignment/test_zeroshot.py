"""Zero-shot classification: prompt ensembling math, a toy model with a known answer, metrics vs sklearn."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score
from toy_alignment import BagOfWordsModel, WordProcessor

from polymodal.config import AlignmentConfig, from_dict
from polymodal.metrics.zeroshot import build_zeroshot_classifier, zeroshot_evaluate, zeroshot_metrics
from polymodal.models import AlignmentModel
from polymodal.types import Batch

CLASSES = ["cat", "dog", "bird"]


VOCAB = {w: i for i, w in enumerate(["a", "photo", "of", "cat.", "dog.", "bird.", "drawing", "cat", "dog", "bird"])}


def _processor():
    return WordProcessor(VOCAB)


def _toy_model():
    """Class words (with or without a full stop) point along axes 0, 1, 2; other words are small and random."""
    words = torch.randn(len(VOCAB), 3, generator=torch.Generator().manual_seed(0)) * 0.1
    for name in CLASSES:
        for word in (name, f"{name}."):
            words[VOCAB[word]] = torch.eye(3)[CLASSES.index(name)]
    return BagOfWordsModel(words, VOCAB, ["image", "text"])


def test_prompt_ensemble_is_mean_of_normalised_template_embeddings_renormalised():
    model = _toy_model()
    templates = ["a photo of a {}.", "a drawing of a {}"]
    weights = build_zeroshot_classifier(model, CLASSES, templates, processor=_processor())
    proc = _processor()
    for c, name in enumerate(CLASSES):
        embs = [F.normalize(model.words[proc(t.format(name))["input_ids"]].sum(0), dim=-1) for t in templates]
        expected = F.normalize(torch.stack(embs).mean(0), dim=-1)
        assert torch.allclose(weights[c], expected, atol=1e-6)


def test_toy_model_classifies_images_by_their_direction():
    model = _toy_model()
    weights = build_zeroshot_classifier(model, CLASSES, processor=_processor())  # default image template
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    images = torch.eye(3)[labels] + 0.05 * torch.randn(7, 3, generator=gen)
    batch = Batch(inputs={"image": {"emb": images}}, present={"image": torch.ones(7, dtype=torch.bool)}, labels=labels)
    metrics = zeroshot_evaluate(model, [batch], weights, "image")
    assert metrics == {"top1": 1.0, "top5": 1.0, "mean_per_class_recall": 1.0}
    wrong = Batch(inputs=batch.inputs, present=batch.present, labels=(labels + 1) % 3)
    assert zeroshot_evaluate(model, [wrong], weights, "image")["top1"] == 0.0


@pytest.mark.filterwarnings("ignore:y_pred contains classes")
def test_metrics_match_sklearn():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(200, 8, generator=gen)
    labels = torch.randint(0, 8, (200,), generator=gen)
    labels[labels == 7] = 6  # class 7 absent: left out of the per-class mean
    metrics = zeroshot_metrics(logits, labels)
    y, scores = labels.numpy(), logits.numpy()
    assert metrics["top1"] == pytest.approx(float(np.mean(scores.argmax(1) == y)))
    assert metrics["top5"] == pytest.approx(top_k_accuracy_score(y, scores, k=5, labels=np.arange(8)))
    assert metrics["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, scores.argmax(1)))


def test_templates_need_a_placeholder_and_real_model_gives_unit_rows():
    config = from_dict(AlignmentConfig, {"embed_dim": 8, "modalities": {
        "audio": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [8]}, "processor": {"n_mels": 16}},
        "text": {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2}}}})
    model = AlignmentModel(config)
    with pytest.raises(ValueError, match="placeholder"):
        build_zeroshot_classifier(model, ["one"], ["no slot"])
    weights = build_zeroshot_classifier(model, ["one", "two", "three"])  # audio default template, own processor
    assert weights.shape == (3, 8)
    assert torch.allclose(weights.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.training  # the train/eval mode is restored
