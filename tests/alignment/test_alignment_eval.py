"""evaluate_alignment on toy embeddings whose retrieval ranks, chance levels and zero-shot answers are known."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from toy_alignment import BagOfWordsModel

from polymodal.config import AlignmentConfig, from_dict
from polymodal.jsonable import jsonable
from polymodal.metrics.alignment import (
    CollectedEmbeddings,
    chance_retrieval,
    evaluate_alignment,
    format_alignment_table,
    instance_positives,
)
from polymodal.models import AlignmentModel
from polymodal.recipes.evaluate import is_alignment_model_dir
from polymodal.types import Batch

CLASSES = ["cat", "dog", "bird"]
VOCAB = {w: i for i, w in enumerate(["a", "photo", "of", "cat", "dog", "bird", "sound"])}


def _toy_model():
    """Class words along axes 0-2, other words small."""
    words = torch.full((len(VOCAB), 3), 0.01)
    for c, name in enumerate(CLASSES):
        words[VOCAB[name]] = torch.eye(3)[c]
    return BagOfWordsModel(words, VOCAB, ["image", "audio", "text"])


def _collected(a, b, labels=None):
    n = a.shape[0]
    return CollectedEmbeddings(embeddings={"image": F.normalize(a, dim=-1), "audio": F.normalize(b, dim=-1)},
                               present={"image": torch.ones(n, dtype=torch.bool), "audio": torch.ones(n, dtype=torch.bool)},
                               labels=labels, ids=[str(i) for i in range(n)])


def test_instance_retrieval_ranks_match_a_hand_computed_answer():
    # image i is closest to audio perm[i]: audio rows are the image axes in the order [0, 2, 1, 3].
    images = torch.eye(4)
    audio = torch.eye(4)[[0, 2, 1, 3]] + 0.1 * torch.eye(4)  # audio j ≈ axis perm[j] (+ a bit of its own axis)
    report = evaluate_alignment(_toy_model(), _collected(images, audio), modalities=["image", "audio"], ks=(1, 2),
                                zeroshot=False)
    forward = report["retrieval"]["instance"]["image_to_audio"]
    # image 0 → audio 0 first (rank 1); image 1 → audio 2 best, its pair audio 1 second; same for image 2; 3 rank 1.
    assert forward["R@1"] == pytest.approx(0.5) and forward["R@2"] == pytest.approx(1.0)
    assert forward["mean_rank"] == pytest.approx(1.5) and forward["median_rank"] == pytest.approx(1.5)
    assert forward["mAP"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert forward["chance"]["R@1"] == pytest.approx(0.25) and forward["chance"]["R@2"] == pytest.approx(0.5)
    assert forward["chance"]["mean_rank"] == pytest.approx(2.5)
    assert "audio_to_image" in report["retrieval"]["instance"]
    assert "class" not in report["retrieval"]  # no labels: instance level only
    assert report["summary"]["retrieval_level"] == "instance"


def test_class_level_counts_any_item_of_the_label_and_chance_is_hypergeometric():
    labels = torch.tensor([0, 0, 1, 1])
    images = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    audio = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.2, 1.0], [1.0, 0.3]])  # audio 1 and 3 sit with the other class
    report = evaluate_alignment(_toy_model(), _collected(images, audio, labels), modalities=["image", "audio"],
                                ks=(1, 2), zeroshot=False)
    cls = report["retrieval"]["class"]["image_to_audio"]
    # Brute force: for each image, rank audio by cosine; correct = same label.
    a, b = F.normalize(images, dim=-1), F.normalize(audio, dim=-1)
    hits1 = [(labels[(a[i] @ b.T).argmax()] == labels[i]).item() for i in range(4)]
    assert cls["R@1"] == pytest.approx(sum(hits1) / 4)
    # 2 positives among 4 items: P(miss in top 1) = 2/4, top 2: C(2,2)/C(4,2) = 1/6.
    assert cls["chance"]["R@1"] == pytest.approx(0.5) and cls["chance"]["R@2"] == pytest.approx(1 - 1 / 6)
    assert report["summary"]["retrieval_level"] == "class"
    assert report["summary"]["mean_R@1"] == pytest.approx(
        (cls["R@1"] + report["retrieval"]["class"]["audio_to_image"]["R@1"]) / 2)


def test_identical_items_are_the_same_instance():
    # Image 0 appears twice (rows 0 and 2, paired with different audio): both audio rows are correct for it.
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    audio = torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.1]])
    positives = instance_positives(images, audio)
    mask = positives.mask(0, 3)
    assert mask.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    report = evaluate_alignment(_toy_model(), _collected(images, audio), modalities=["image", "audio"], ks=(1,),
                                zeroshot=False)
    assert report["retrieval"]["instance"]["image_to_audio"]["R@1"] == pytest.approx(1.0)
    assert report["retrieval"]["instance"]["audio_to_image"]["R@1"] == pytest.approx(1.0)


def test_zeroshot_toy_model_has_the_known_answer_and_report_is_json_ready():
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    images = torch.eye(3)[labels] + 0.05
    audio = torch.eye(3)[[1, 1, 2, 0, 1, 0]]  # 4 of 6 recordings point at their class
    data = CollectedEmbeddings(
        embeddings={"image": F.normalize(images, dim=-1), "audio": F.normalize(audio, dim=-1)},
        present={"image": torch.ones(6, dtype=torch.bool), "audio": torch.ones(6, dtype=torch.bool)},
        labels=labels, ids=[str(i) for i in range(6)])
    report = evaluate_alignment(_toy_model(), data, modalities=["image", "audio"], class_names=CLASSES,
                                templates={"image": ["a photo of a {}"], "audio": ["a {} sound"]})
    zs = report["zeroshot"]
    assert zs["image"]["top1"] == pytest.approx(1.0) and zs["image"]["mean_per_class_recall"] == pytest.approx(1.0)
    assert zs["audio"]["top1"] == pytest.approx(4 / 6)
    # per-class recall: cat 1/2 (row 0 wrong), dog 2/2, bird 1/2 (row 3 wrong) → mean 2/3
    assert zs["audio"]["mean_per_class_recall"] == pytest.approx(2 / 3)
    assert zs["audio"]["top5"] == pytest.approx(1.0)  # 3 classes: top-5 covers them all
    assert zs["image"]["chance"]["top1"] == pytest.approx(1 / 3)
    assert zs["audio"]["templates"] == ["a {} sound"]
    text = json.dumps(jsonable(report), allow_nan=False)
    assert "R@1" in text and "recall_at_k" in text
    table = format_alignment_table(report)
    assert "image → audio" in table and "| audio |" in table


def test_chance_retrieval_matches_a_monte_carlo_estimate():
    gen = torch.Generator().manual_seed(0)
    n, positives, k = 20, 3, 5
    hits = sum(bool((torch.randperm(n, generator=gen)[:k] < positives).any()) for _ in range(4000)) / 4000
    exact = chance_retrieval(n, torch.tensor([positives]), ks=(k,))["R@5"]
    assert exact == pytest.approx(1 - math.comb(n - positives, k) / math.comb(n, k))
    assert abs(hits - exact) < 0.03


def test_evaluate_alignment_runs_on_batches_of_a_real_model_and_missing_modality_errors():
    config = from_dict(AlignmentConfig, {
        "modalities": {"image": {"kind": "image", "processor": {"image_size": 8, "channels": 1},
                                 "options": {"channels": [8]}},
                       "text": {"kind": "text", "options": {"dim": 16, "depth": 1}}},
        "embed_dim": 8})
    model = AlignmentModel(config).eval()
    texts = ["a one", "a two", "a one", "a two"]
    batch = Batch(inputs={"image": {"pixel_values": torch.randn(4, 1, 8, 8)},
                          "text": model.processors["text"].collate([model.processors["text"](t) for t in texts])},
                  present={"image": torch.ones(4, dtype=torch.bool), "text": torch.ones(4, dtype=torch.bool)},
                  labels=torch.tensor([0, 1, 0, 1]), ids=["a", "b", "c", "d"])
    report = evaluate_alignment(model, [batch, batch], class_names=["one", "two"], templates=["a {}"], with_loss=True)
    assert report["num_samples"] == 8 and math.isfinite(report["loss"])
    assert set(report["retrieval"]) == {"instance", "class"} and set(report["zeroshot"]) == {"image"}
    # The two copies of each sample are the same instance: a query's own row and its copy are both correct.
    assert report["retrieval"]["instance"]["image_to_text"]["num_queries"] == 8
    with pytest.raises(KeyError, match="audio"):
        evaluate_alignment(model, [batch], modalities=["image", "audio"])


def test_is_alignment_model_dir(tmp_path):
    config = from_dict(AlignmentConfig, {
        "modalities": {"image": {"kind": "image", "processor": {"image_size": 8, "channels": 1},
                                 "options": {"channels": [8]}},
                       "text": {"kind": "text", "options": {"dim": 16, "depth": 1}}},
        "embed_dim": 8})
    AlignmentModel(config).save_pretrained(tmp_path / "run" / "best")
    assert is_alignment_model_dir(tmp_path / "run" / "best") and is_alignment_model_dir(tmp_path / "run")
    assert not is_alignment_model_dir(tmp_path) and not is_alignment_model_dir(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"architecture": "MultimodalModel"}))
    (tmp_path / "other" / "model.safetensors").write_bytes(b"")
    assert not is_alignment_model_dir(tmp_path / "other")


def _image_text_model_and_batches():
    config = from_dict(AlignmentConfig, {
        "modalities": {"image": {"kind": "image", "processor": {"image_size": 8, "channels": 1},
                                 "options": {"channels": [8]}},
                       "text": {"kind": "text", "options": {"dim": 16, "depth": 1}}},
        "embed_dim": 8})
    torch.manual_seed(0)
    model = AlignmentModel(config).eval()
    batches = []
    for b, texts in enumerate((["one", "two words here", "one"], ["one", "three", "two words here"])):
        text = model.processors["text"].collate([model.processors["text"](t) for t in texts])
        batches.append(Batch(inputs={"image": {"pixel_values": torch.randn(3, 1, 8, 8)}, "text": text},
                             present={"image": torch.ones(3, dtype=torch.bool), "text": torch.ones(3, dtype=torch.bool)},
                             labels=torch.tensor([0, 1, 0]), ids=[f"{b}-{i}" for i in range(3)]))
    return model, batches


def test_copies_are_found_from_inputs_whatever_the_padding():
    """"one" is padded to 3 tokens in batch 0 and to 1 in batch 1: still one caption (content group)."""
    from polymodal.metrics.alignment import collect_embeddings

    model, batches = _image_text_model_and_batches()
    data = collect_embeddings(model, batches)
    groups = data.groups["text"].tolist()
    assert groups[0] == groups[2] == groups[3] and groups[1] == groups[5] and len(set(groups)) == 3
    assert len(set(data.groups["image"].tolist())) == 6  # random images: all different
    positives = instance_positives(data.embeddings["image"], data.embeddings["text"], data.groups["image"],
                                   data.groups["text"])
    assert positives.mask(0, 6)[0].nonzero().view(-1).tolist() == [0, 2, 3]


def test_instance_retrieval_is_the_one_definition_and_groups_can_be_overridden():
    from polymodal.metrics.alignment import collect_embeddings, instance_retrieval
    from polymodal.metrics.retrieval import first_positive_ranks

    model, batches = _image_text_model_and_batches()
    data = collect_embeddings(model, batches)
    directions, ranks = instance_retrieval(data, ["image", "text"], ks=(1, 5))
    report = evaluate_alignment(model, batches, zeroshot=False)
    for name, metrics in directions.items():
        assert metrics["R@1"] == report["retrieval"]["instance"][name]["R@1"]
        assert float((ranks[name][1] == 1).double().mean()) == pytest.approx(metrics["R@1"])
    assert report["summary"]["instance_mean_R@1"] == pytest.approx(
        (directions["image_to_text"]["R@1"] + directions["text_to_image"]["R@1"]) / 2)
    # Strict own-row positives (every row its own group) can only give fewer hits.
    own = {m: torch.arange(6) for m in ("image", "text")}
    strict, _ = instance_retrieval(data, ["image", "text"], ks=(1,), groups=own)
    direct, _ = first_positive_ranks(data.embeddings["image"], data.embeddings["text"], None)
    assert strict["image_to_text"]["R@1"] == pytest.approx(float((direct == 1).double().mean()))
    assert strict["image_to_text"]["R@1"] <= directions["image_to_text"]["R@1"]


def test_validation_metric_logged_by_the_trainer_is_the_same_instance_number():
    from polymodal.config import RunConfig, from_dict
    from polymodal.tasks import get_task

    model, batches = _image_text_model_and_batches()
    config = from_dict(RunConfig, {"task": "alignment",
                                   "model": {"modalities": {"image": {"kind": "image"}, "text": {"kind": "text"}}}})
    logged = get_task("alignment").validate(model, batches, torch.device("cpu"), None, config)
    report = evaluate_alignment(model, batches, zeroshot=False)
    assert logged["instance_R@1"] == pytest.approx(report["summary"]["instance_mean_R@1"])
