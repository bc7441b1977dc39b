"""The unified evaluation report: schema, embedded plots, provenance, robustness ablation, alignment, CLI."""

import base64
import json
import re

import jsonschema
import pytest
import torch

from polymodal.cli import main
from polymodal.config import ModelConfig, from_dict
from polymodal.evaluation.report import (
    ReportOptions,
    build_report,
    data_fingerprint,
    load_schema,
    validate_report,
    write_report,
)
from polymodal.models import MultimodalModel
from polymodal.recipes.evaluate import evaluate_path
from polymodal.tasks import task_loss
from polymodal.types import Batch

TINY = {
    "image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
              "processor": {"image_size": 8, "channels": 1}},
    "audio": {"kind": "audio", "encoder": "audio_cnn", "options": {"channels": [4, 8]},
              "processor": {"max_seconds": 0.5, "n_mels": 16}},
}
LABELS = [str(i) for i in range(10)]
DATA = {"name": "spoken-digits", "limit": 40, "eval_batch_size": 20}
FAST = ReportOptions(bootstrap=200, severities=(0, 3), repeats=2, warmup=1, efficiency_batch_sizes=(1, 4))
PLOTS = ["Confusion matrix", "Per-class precision / recall / F1", "ROC curves", "Precision-recall curves",
         "Reliability diagram", "Training curves", "Robustness imperfection curves"]


def _model(fusion="concat") -> MultimodalModel:
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"modalities": TINY, "fusion": {"name": fusion, "dim": 8},
                                     "head": {"labels": LABELS, "dropout": 0.0}})
    model = MultimodalModel(config)
    model.data_config = dict(DATA)
    return model


def _zero_audio_half(model: MultimodalModel) -> None:
    with torch.no_grad():
        model.head.net[-1].weight[:, 8:] = 0.0


def _ignore_audio(model: MultimodalModel) -> MultimodalModel:
    """concat fuses [image | audio] (construction order): zero head weights on the audio half → audio cannot
    matter. A few steps on the evaluation rows make the image path decisive, so removing image does matter."""
    from polymodal.config import Config, DataConfig
    from polymodal.pipeline import prepare

    config = Config(model=model.config, data=from_dict(DataConfig, DATA))
    _, loaders, _ = prepare(config, splits=("test",))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(10):
        for batch in loaders["test"]:
            optimizer.zero_grad()
            task_loss(model, batch).backward()
            optimizer.step()
            _zero_audio_half(model)
    return model.eval()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    _ignore_audio(_model()).save_pretrained(run / "best")
    rows = [{"kind": "step", "epoch": 0, "step": s, "train_loss": 2.3 - 0.1 * s, "lr": 1e-3} for s in range(1, 5)]
    rows += [{"kind": "epoch", "epoch": 1, "step": 4, "val_accuracy": 0.3, "val_loss": 2.0}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report, paths = evaluate_path(run, out=run / "eval", options=FAST)
    return run, report, paths


def test_report_json_validates_against_schema(evaluated):
    _, report, paths = evaluated
    written = json.loads(paths["json"].read_text())
    jsonschema.validate(written, load_schema())  # the packaged schema, independently of validate_report
    meta = written["meta"]
    assert written["schema_version"] == "1.0"
    assert meta["torch_version"] == torch.__version__ and meta["polymodal_version"]
    assert re.fullmatch(r"[0-9a-f]{64}", meta["data"]["fingerprint"]) and meta["data"]["num_samples"] == 40
    assert re.fullmatch(r"[0-9a-f]{64}", meta["config_hash"]) and meta["seed"] == 0
    # a broken report is refused with the failing path named
    broken = json.loads(paths["json"].read_text())
    broken["quality"]["accuracy"] = 1.5
    with pytest.raises(ValueError, match="quality/accuracy"):
        validate_report(broken)


def test_quality_metrics_and_intervals(evaluated):
    run, report, paths = evaluated
    quality = report["quality"]
    metrics = json.loads(paths["metrics"].read_text())  # metrics.json = the classification report, as before
    assert metrics["accuracy"] == pytest.approx(quality["accuracy"])
    predictions = json.loads(paths["predictions"].read_text())
    probs, y = torch.tensor(predictions["probs"]), torch.tensor(predictions["y_true"])
    assert quality["accuracy"] == pytest.approx(float((probs.argmax(1) == y).float().mean()))
    intervals = quality["bootstrap"]["intervals"]
    assert quality["bootstrap"]["n_resamples"] == 200
    for name in ("accuracy", "macro_f1", "ece"):
        ci = intervals[name]
        assert ci["low"] <= ci["point"] <= ci["high"], name
    assert intervals["accuracy"]["point"] == pytest.approx(quality["accuracy"])
    assert 0 <= quality["ece"] <= 1
    eff = report["efficiency"]
    assert eff["flops_per_sample"] > 0 and eff["params"]["total"] > 0 and eff["disk"]["bytes"] > 0
    assert eff["latency_ms"]["p95"] >= eff["latency_ms"]["p50"] > 0
    assert report["training"]["series"]["train_loss"]["value"][-1] == pytest.approx(1.9)


def test_html_embeds_every_plot_as_nonempty_png(evaluated):
    _, _, paths = evaluated
    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert "<link" not in html and "<script" not in html  # self-contained
    images = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html))
    for title in PLOTS:
        assert title.replace("/", "/") in {t.replace("&amp;", "&") for t in images}, f"missing plot {title}"
        png = base64.b64decode(images[title.replace("&", "&amp;")])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000, title
    md = paths["md"].read_text()
    for heading in ("## Quality", "## Efficiency", "## Robustness", "## Training"):
        assert heading in md


def test_ablation_of_an_ignored_modality_shows_zero_drop(evaluated):
    _, report, _ = evaluated
    robustness = report["robustness"]
    assert robustness["removed"]["audio"]["drop"] == 0.0
    assert robustness["contribution"]["audio"]["shapley"] == pytest.approx(0.0, abs=1e-12)
    assert robustness["removed"]["image"]["drop"] > 0.2  # the image path was trained to carry the labels
    assert robustness["contribution"]["image"]["share"] == pytest.approx(1.0)
    # every subset is reported: image, audio, image+audio
    assert sorted("+".join(s["modalities"]) for s in robustness["subsets"]) == ["audio", "image", "image+audio"]
    curves = {c["corruption"]: c for c in robustness["corruptions"]}
    assert set(curves) == {"gaussian_noise", "gaussian_blur", "audio_noise"}
    assert curves["audio_noise"]["values"][0] == curves["audio_noise"]["values"][-1]  # audio is ignored
    assert curves["gaussian_blur"]["severities"] == [0.0, 3.0]


def test_data_fingerprint_tracks_inputs():
    batch = Batch(inputs={"image": {"pixel_values": torch.zeros(2, 1, 4, 4)}},
                  present={"image": torch.ones(2, dtype=torch.bool)}, labels=torch.tensor([0, 1]), ids=["a", "b"])
    other = Batch(inputs={"image": {"pixel_values": torch.zeros(2, 1, 4, 4)}},
                  present={"image": torch.ones(2, dtype=torch.bool)}, labels=torch.tensor([0, 1]), ids=["a", "b"])
    assert data_fingerprint([batch]) == data_fingerprint([other])
    other.inputs["image"]["pixel_values"][0, 0, 0, 0] = 1.0
    assert data_fingerprint([batch]) != data_fingerprint([other])


def test_alignment_report_has_retrieval_and_rank_histogram():
    from polymodal.config import AlignmentConfig
    from polymodal.models import AlignmentModel

    torch.manual_seed(0)
    model = AlignmentModel(from_dict(AlignmentConfig, {"modalities": TINY, "embed_dim": 8}))
    gen = torch.Generator().manual_seed(0)
    batches = [Batch(inputs={"image": {"pixel_values": torch.randn(12, 1, 8, 8, generator=gen)},
                             "audio": {"features": torch.randn(12, 16, 20, generator=gen),
                                       "feature_mask": torch.ones(12, 20, dtype=torch.bool)}},
                     present={"image": torch.ones(12, dtype=torch.bool), "audio": torch.ones(12, dtype=torch.bool)},
                     labels=torch.arange(12) % 3, ids=[f"{b}-{i}" for i in range(12)]) for b in range(2)]
    report = build_report(model, batches, ReportOptions(bootstrap=100, efficiency=False, severities=(0, 2)))
    validate_report(report)
    assert report["kind"] == "alignment" and report["quality"] is None
    pair = report["retrieval"]["pairs"]["image-audio"]
    assert 0 <= pair["image_to_audio/R@1"] <= pair["image_to_audio/R@5"] <= 1
    histogram = report["retrieval_ranks"]["histogram"]
    assert sum(histogram["counts"]) == 2 * 24  # both directions, every query
    assert {c["corruption"] for c in report["robustness"]["corruptions"]} == {"gaussian_noise", "gaussian_blur"}
    from polymodal.evaluation.html import render_html

    assert 'alt="Retrieval rank histogram" src="data:image/png;base64,' in render_html(report)


def test_cli_eval_writes_reports_and_explains_missing_data(evaluated, tmp_path, capsys):
    run, _, _ = evaluated
    code = main(["eval", str(run), "--out", str(tmp_path / "cli"), "--bootstrap", "50", "--no-robustness",
                 "--no-efficiency"])
    assert code == 0
    for name in ("metrics.json", "report.json", "report.md", "report.html", "predictions.json"):
        assert (tmp_path / "cli" / name).stat().st_size > 0
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert report["robustness"] is None and report["efficiency"] is None
    assert report["quality"]["bootstrap"]["n_resamples"] == 50
    assert "95% CI" in capsys.readouterr().out
    assert main(["eval", str(run), "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- small samples, one definition


def test_accuracy_interval_is_clopper_pearson_and_degenerate_intervals_are_flagged():
    import numpy as np
    from scipy import stats

    from polymodal.evaluation.report import classification_quality, interval_notes

    y = np.array([0, 1, 0])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0]])  # 3 of 3 right; class "c" absent
    quality = classification_quality(y, probs, ["a", "b", "c"], "multiclass", ReportOptions(bootstrap=100))
    accuracy = quality["bootstrap"]["intervals"]["accuracy"]
    ref = stats.binomtest(3, 3).proportion_ci(0.95, method="exact")
    assert accuracy["method"] == "clopper-pearson"
    assert (accuracy["low"], accuracy["high"]) == pytest.approx((ref.low, ref.high))  # [0.29, 1.0], not [1, 1]
    macro = quality["bootstrap"]["intervals"]["macro_f1"]
    assert macro["degenerate"] and "zero width" in macro["note"]
    report = {"quality": quality}
    notes = interval_notes(report)
    assert any("Clopper" in n for n in notes) and any(n.startswith("macro_f1: degenerate") for n in notes)
    assert any("no true sample of class(es) c" in n for n in notes)


def _caption_model_and_batches():
    """A tiny image + text aligner; 3 batches of 4 rows whose captions repeat ("stripes" on 6 of 12 rows) and are
    padded to different lengths in different batches."""
    from polymodal.config import AlignmentConfig
    from polymodal.models import AlignmentModel

    torch.manual_seed(0)
    config = from_dict(AlignmentConfig, {
        "modalities": {"image": {"kind": "image", "processor": {"image_size": 8, "channels": 1},
                                 "options": {"channels": [4]}},
                       "text": {"kind": "text", "options": {"dim": 16, "depth": 1}}},
        "embed_dim": 8})
    model = AlignmentModel(config).eval()
    captions = [["stripes", "dots", "stripes", "a very long checker caption"],
                ["stripes", "dots", "stripes", "dots"],
                ["stripes", "stripes", "dots", "checker"]]
    gen = torch.Generator().manual_seed(1)
    batches = []
    for b, texts in enumerate(captions):
        text = model.processors["text"].collate([model.processors["text"](t) for t in texts])
        batches.append(Batch(inputs={"image": {"pixel_values": torch.randn(4, 1, 8, 8, generator=gen)}, "text": text},
                             present={"image": torch.ones(4, dtype=torch.bool), "text": torch.ones(4, dtype=torch.bool)},
                             labels=None, ids=[f"{b}-{i}" for i in range(4)]))
    return model, batches


def test_alignment_report_states_one_instance_number_everywhere(tmp_path):
    from polymodal.metrics.alignment import evaluate_alignment

    model, batches = _caption_model_and_batches()
    report = build_report(model, batches, ReportOptions(bootstrap=100, efficiency=False, severities=(0, 2)))
    validate_report(report)
    retrieval = report["retrieval"]
    table = retrieval["pairs"]["image-text"]
    full = evaluate_alignment(model, batches)["retrieval"]["instance"]
    stored = retrieval["evaluate_alignment"]["retrieval"]["instance"]
    for direction in ("image_to_text", "text_to_image"):
        assert table[f"{direction}/R@1"] == full[direction]["R@1"] == stored[direction]["R@1"]
    mean = (table["image_to_text/R@1"] + table["text_to_image/R@1"]) / 2
    assert retrieval["instance_mean_R@1"] == pytest.approx(mean)
    assert retrieval["bootstrap"]["intervals"]["instance_R@1"]["point"] == pytest.approx(mean)
    for curve in report["robustness"]["corruptions"]:  # severity 0 = the clean headline
        assert curve["values"][0] == pytest.approx(mean)
    # Histogram: the first-correct ranks of the same definition; rank-1 share = the headline.
    histogram = report["retrieval_ranks"]["histogram"]
    assert histogram["counts"][0] / sum(histogram["counts"]) == pytest.approx(mean)
    paths = write_report(report, tmp_path)
    for name in ("md", "html"):
        text = paths[name].read_text()
        assert "Instance level: instance level: a query is correct when its own pair, or an item with identical" in text


def test_repeated_captions_are_positives_in_the_report_table():
    """With 6 "stripes" captions, an image query is right when ANY stripes caption comes first (strict own-row
    R@1 would count those ties against the model)."""
    from polymodal.metrics.retrieval import first_positive_ranks, instance_positives

    model, batches = _caption_model_and_batches()
    report = build_report(model, batches, ReportOptions(bootstrap=0, efficiency=False, robustness=False))
    got = report["retrieval"]["pairs"]["image-text"]["image_to_text/R@1"]
    with torch.no_grad():
        images = torch.cat([model.encode(b, "image") for b in batches])
        texts = torch.cat([model.encode(b, "text") for b in batches])
    words = [t for texts_ in (["stripes", "dots", "stripes", "a very long checker caption"],
                              ["stripes", "dots", "stripes", "dots"], ["stripes", "stripes", "dots", "checker"])
             for t in texts_]
    group_text = torch.tensor([sorted(set(words)).index(w) for w in words])
    ranks, _ = first_positive_ranks(images, texts, instance_positives(torch.arange(12), group_text))
    assert got == pytest.approx(float((ranks == 1).double().mean()))
    strict, _ = first_positive_ranks(images, texts, None)
    assert float((strict == 1).double().mean()) <= got
