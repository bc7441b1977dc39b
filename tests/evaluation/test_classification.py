"""Every classification metric against scikit-learn on many seeded random cases (tolerance 1e-9)."""

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from polymodal.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    format_report_table,
    multilabel_scores,
    precision_recall_f1,
    predict_loader,
    roc_auc_binary,
)
from polymodal.types import Batch, ModelOutput

TOL = 1e-9


def _random_probs(rng, n, c, ties=False):
    logits = rng.normal(size=(n, c))
    if ties:  # coarse scores create many tied ranks, the hard case for ROC-AUC
        logits = np.round(logits, 0)
    probs = np.exp(logits)
    return probs / probs.sum(1, keepdims=True)


def _assert_close(ours, reference, what):
    assert np.allclose(ours, reference, atol=TOL, rtol=0), f"{what}: ours {ours} vs sklearn {reference}"


@pytest.mark.parametrize("seed", range(40))
def test_multiclass_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(3, 7))
    n = int(rng.integers(8, 60))
    y_true = rng.integers(0, c - (seed % 3 == 0), size=n)  # every third case: one class never occurs
    probs = _random_probs(rng, n, c, ties=seed % 2 == 0)
    if seed % 5 == 0:  # a predicted class that never wins: precision 0/0
        probs[:, c - 1] = 0.0
        probs /= probs.sum(1, keepdims=True)
    y_pred = probs.argmax(1)
    labels = list(range(c))
    _assert_close(accuracy(y_true, y_pred), skm.accuracy_score(y_true, y_pred), "accuracy")
    assert (confusion_matrix(y_true, y_pred, c) == skm.confusion_matrix(y_true, y_pred, labels=labels)).all()
    ours = precision_recall_f1(y_true, y_pred, c)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for name, ref in zip(("precision", "recall", "f1", "support"), (p, r, f, s)):
        _assert_close(ours["per_class"][name], ref, f"per-class {name}")
    for average in ("macro", "micro", "weighted"):
        # scikit-learn's DEFAULT label set (classes in y_true or y_pred): a class never seen is not a zero.
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        got = ours[f"{average}_avg"]
        _assert_close([got["precision"], got["recall"], got["f1"]], [p, r, f], f"{average} average")

    report = classification_report(y_true, probs, [f"c{i}" for i in range(c)], "multiclass")
    json.dumps(report)  # JSON-ready
    present = np.unique(y_true)
    if len(present) == c:
        for average in ("macro", "weighted"):
            ref = skm.roc_auc_score(y_true, probs, multi_class="ovr", average=average, labels=labels)
            _assert_close(report["roc_auc_detail"][average], ref, f"ovr {average} AUC")
    else:  # sklearn refuses; we report the missing class as None and average over the defined ones
        missing = sorted(set(labels) - set(present))
        assert report["roc_auc_detail"]["undefined_classes"] == [f"c{i}" for i in missing]
        per_class = [skm.roc_auc_score(y_true == k, probs[:, k]) for k in present]
        _assert_close(report["roc_auc"], np.mean(per_class), "macro AUC over defined classes")
        for k in missing:
            assert report["roc_auc_detail"]["per_class"][f"c{k}"] is None


@pytest.mark.parametrize("seed", range(25))
def test_binary_matches_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 80))
    y_true = rng.integers(0, 2, size=n)
    positive = np.round(rng.random(n), 1 if seed % 2 else 6)  # ties on even seeds
    report = classification_report(torch.tensor(y_true).float().unsqueeze(1), positive, ["neg", "pos"], "binary")
    y_pred = (np.stack([1 - positive, positive], 1)).argmax(1)
    _assert_close(report["accuracy"], skm.accuracy_score(y_true, y_pred), "accuracy")
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
    _assert_close([report["binary"][k] for k in ("precision", "recall", "f1")], [p, r, f], "positive class")
    _assert_close(report["macro_f1"], skm.f1_score(y_true, y_pred, average="macro", zero_division=0), "macro F1")
    if len(np.unique(y_true)) == 2:
        _assert_close(report["roc_auc"], skm.roc_auc_score(y_true, positive), "binary AUC")
    else:
        assert report["roc_auc"] is None


def test_binary_auc_undefined_with_one_class():
    assert roc_auc_binary([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert roc_auc_binary([0, 1], [0.3, 0.3]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(30))
def test_multilabel_matches_sklearn(seed):
    rng = np.random.default_rng(500 + seed)
    n, c = int(rng.integers(4, 40)), int(rng.integers(2, 6))
    y_true = (rng.random((n, c)) < rng.uniform(0.1, 0.6)).astype(int)
    if seed % 4 == 0:
        y_true[:, 0] = 0  # a label never present: recall 0/0, AUC undefined
    probs = np.round(rng.random((n, c)), 1)  # includes exact 0.5 values: threshold is >=
    y_pred = (probs >= 0.5).astype(int)
    ours = multilabel_scores(y_true, y_pred)
    used = [k for k in range(c) if y_true[:, k].any() or y_pred[:, k].any()]  # our one policy (module docstring)
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0, labels=used if average == "macro" else None
        )
        got = ours[f"{average}_avg"]
        _assert_close([got["precision"], got["recall"], got["f1"]], [p, r, f], f"multi-label {average}")
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    for name, ref in zip(("precision", "recall", "f1", "support"), (p, r, f, s)):
        _assert_close(ours["per_class"][name], ref, f"per-label {name}")
    _assert_close(ours["subset_accuracy"], skm.accuracy_score(y_true, y_pred), "subset accuracy")
    _assert_close(ours["hamming_loss"], skm.hamming_loss(y_true, y_pred), "hamming loss")
    assert (ours["confusion_matrices"] == skm.multilabel_confusion_matrix(y_true, y_pred)).all()

    report = classification_report(y_true, probs, task="multilabel")
    defined = [k for k in range(c) if 0 < y_true[:, k].sum() < n]
    if len(defined) == c:
        for average in ("macro", "weighted", "micro"):
            ref = skm.roc_auc_score(y_true, probs, average=average)
            _assert_close(report["roc_auc_detail"][average], ref, f"multi-label {average} AUC")
    else:
        ref = np.mean([skm.roc_auc_score(y_true[:, k], probs[:, k]) for k in defined]) if defined else None
        assert (report["roc_auc"] is None) == (ref is None)
        if ref is not None:
            _assert_close(report["roc_auc"], ref, "macro AUC over defined labels")


def test_report_table_looks_like_sklearn():
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 3, size=50)
    probs = _random_probs(rng, 50, 3)
    report = classification_report(y_true, probs, ["cat", "dog", "emu"])
    table = format_report_table(json.loads(json.dumps(report)))
    reference = skm.classification_report(y_true, probs.argmax(1), target_names=["cat", "dog", "emu"], digits=4)
    for name in ("cat", "dog", "emu", "macro avg", "weighted avg"):
        ours_row = next(line for line in table.splitlines() if line.strip().startswith(name))
        ref_row = next(line for line in reference.splitlines() if line.strip().startswith(name))
        assert ours_row.split()[-4:] == ref_row.split()[-4:], (ours_row, ref_row)
    assert "ROC-AUC (one-vs-rest macro)" in table


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="2 labels"):
        classification_report([0, 1, 2], np.full((3, 3), 1 / 3), ["a", "b"])
    with pytest.raises(ValueError, match="only 3 columns"):
        classification_report([0, 1, 3], np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="NaN"):
        classification_report([0, 1], np.array([[np.nan, 1.0], [0.5, 0.5]]))


class _FixedModel(torch.nn.Module):
    task = "multiclass"

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 3)

    def forward(self, batch):
        logits = self.linear(batch.inputs["x"]["values"])
        return ModelOutput(logits=logits, loss=torch.nn.functional.cross_entropy(logits, batch.labels))


def test_predict_loader_collects_probs_labels_and_ids():
    model = _FixedModel()
    x = torch.randn(10, 2)
    y = torch.randint(0, 3, (10,))
    batches = [
        Batch(inputs={"x": {"values": x[i : i + 4]}}, present={"x": torch.ones(len(x[i : i + 4]), dtype=bool)},
              labels=y[i : i + 4], ids=[f"s{j}" for j in range(i, min(i + 4, 10))])
        for i in range(0, 10, 4)
    ]
    y_true, probs, ids = predict_loader(model, batches, "cpu")
    assert ids == [f"s{j}" for j in range(10)]
    assert (y_true == y.numpy()).all()
    with torch.no_grad():
        expected = torch.cat([model(b).logits.softmax(-1) for b in batches]).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------- classes without support


def _one_hot_probs(pred, c):
    probs = np.full((len(pred), c), 0.05)
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


def test_class_with_no_support_is_left_out_and_named():
    """cat, dog, bird scored on a test set with no bird, every prediction right: macro 1.0 (sklearn), bird named."""
    y = np.array([0, 0, 1, 1, 0, 1])
    report = classification_report(y, _one_hot_probs(y, 3), ["cat", "dog", "bird"])
    assert report["macro_f1"] == report["macro_avg"]["recall"] == report["macro_avg"]["precision"] == 1.0
    assert report["macro_f1"] == skm.f1_score(y, y, average="macro")
    assert report["no_support_classes"] == report["unused_classes"] == ["bird"]
    assert "bird" in report["notes"][0] and "left out" in report["notes"][0]
    assert report["per_class"]["bird"]["support"] == 0  # the row stays
    assert "note: no true sample of class(es) bird" in format_report_table(report)


def test_class_predicted_but_never_true_counts_against_precision():
    y = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 2, 1, 1, 0, 2])  # "bird" predicted twice, never true
    report = classification_report(y, _one_hot_probs(pred, 3), ["cat", "dog", "bird"])
    for name in ("precision", "recall", "f1"):
        ref = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        assert report["macro_avg"][name] == pytest.approx(ref[("precision", "recall", "f1").index(name)], abs=TOL)
    assert report["macro_f1"] < 1 and report["unused_classes"] == [] and report["no_support_classes"] == ["bird"]
    assert "predicted but never true" in report["notes"][0]


@pytest.mark.parametrize("seed", range(20))
def test_macro_averages_match_sklearn_default_with_absent_and_predicted_only_classes(seed):
    rng = np.random.default_rng(900 + seed)
    c = int(rng.integers(4, 9))
    n = int(rng.integers(3, 30))
    y = rng.choice(c - 2, size=n)  # the last two classes are never true
    pred = np.where(rng.random(n) < 0.3, c - 1, rng.choice(c - 2, size=n))  # the last one is sometimes predicted
    report = classification_report(y, _one_hot_probs(pred, c))
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    _assert_close([report["macro_avg"][k] for k in ("precision", "recall", "f1")], [p, r, f], "macro, default labels")
    _assert_close(report["weighted_f1"], skm.f1_score(y, pred, average="weighted", zero_division=0), "weighted")
    used = set(y) | set(pred)
    assert report["unused_classes"] == [str(k) for k in range(c) if k not in used]


def test_evaluate_classifier_uses_the_same_macro_definition():
    from polymodal.metrics.classification import precision_recall_f1

    y, pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    assert precision_recall_f1(y, pred, 5)["macro_avg"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
