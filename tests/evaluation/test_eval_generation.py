"""``polymodal eval`` on generation models (captioning, vqa, transcription, chat): the "generation" report kind.

Each run directory is built as ``polymodal train`` writes one (best/ + config.yaml) from a tiny untrained model of
the task (random weights: greedy decoding gives varied text); the numbers in metrics.json must be those of
``tasks.generation_eval.evaluate_generation`` — the one metric path — on the same data and settings."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from polymodal.config import RunConfig, from_dict
from polymodal.evaluation.report import ReportOptions, headline_rows, kind_for_report
from polymodal.recipes.evaluate import evaluate_path
from polymodal.tasks import get_task, load_model
from polymodal.tasks.generation import load_rows
from polymodal.tasks.generation_eval import evaluate_generation

TINY_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 256, "initializer_range": 0.5}  # wide logits: random text, not blanks
TINY_IMAGE = {"encoder": {"kind": "image", "processor": {"image_size": 16}, "options": {"channels": [8, 16, 16]}},
              "freeze_encoder": False}
TINY_AUDIO = {"encoder": {"kind": "audio", "options": {"channels": [8, 16]}}, "freeze_encoder": False}
TASKS = {"captioning": ("scenes", {"image": TINY_IMAGE}), "vqa": ("scenes", {"image": TINY_IMAGE}),
         "transcription": ("spoken-digits", {"audio": TINY_AUDIO}),
         "chat": ("spoken-digits", {"image": TINY_IMAGE, "audio": TINY_AUDIO})}
EXPECTED = {"captioning": {"bleu_1", "bleu_4", "cider_d", "rouge_l_coco"}, "vqa": {"vqa_accuracy", "exact_match"},
            "transcription": {"wer", "cer", "exact_match"}, "chat": {"exact_match", "bleu_1", "rouge_l_coco"}}
FAST = ReportOptions(bootstrap=50, robustness=False)


def make_run(task: str, root) -> tuple[RunConfig, object]:
    """A run directory like `polymodal train` leaves: config.yaml + best/ (an untrained tiny model of ``task``)."""
    data, modalities = TASKS[task]
    config = from_dict(RunConfig, {
        "task": task, "data": {"name": data, "limit": 6, "eval_batch_size": 4},
        "model": {"modalities": modalities, "decoder": {"options": TINY_DECODER}, "tokenizer": {"vocab_size": 300}},
        "train": {"out_dir": str(root / "run")},
        "generate": {"max_new_tokens": 4, "bootstrap": 50, "meteor": False, "validate_samples": 2}})
    torch.manual_seed(0)
    model = get_task(task).build_model(config, [])
    model.save_pretrained(root / "run" / "best")
    (root / "run" / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    return config, root / "run"


@pytest.fixture(scope="module")
def vqa_run(tmp_path_factory):
    return make_run("vqa", tmp_path_factory.mktemp("vqa"))


def reference_numbers(config: RunConfig, run, bootstrap: int = 50) -> dict:
    """evaluate_generation on the run's test split, as the training recipe calls it (the model reloaded)."""
    import dataclasses

    model = load_model(run / "best")
    loader = get_task(config.task).prepare_data(config, ("test",)).loaders["test"]
    train = load_rows(config, "train")[0] if config.task == "vqa" else None
    generate = dataclasses.replace(config.generate, bootstrap=bootstrap)
    return evaluate_generation(config.task, model, loader, generate=generate, train_rows=train)


def without_timing(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "efficiency"}


@pytest.mark.parametrize("task", list(TASKS))
def test_eval_of_every_generation_task_equals_evaluate_generation(task, tmp_path):
    config, run = make_run(task, tmp_path)
    report, paths = evaluate_path(run, options=FAST)
    assert report["kind"] == "generation" and report["quality"] is None and report["efficiency"] is None
    assert set(paths) == {"json", "md", "html", "predictions", "metrics"}
    metrics = json.loads(paths["metrics"].read_text())
    expected = json.loads(json.dumps(reference_numbers(config, run)))
    assert without_timing(metrics) == without_timing(expected)
    assert EXPECTED[task] <= set(metrics["metrics"])
    for entry in metrics["metrics"].values():  # every metric has its 95% bootstrap CI around it
        assert entry["ci_low"] <= entry["value"] + 1e-9 and entry["value"] <= entry["ci_high"] + 1e-9
    eff = metrics["efficiency"]
    assert eff["generated_tokens"] > 0 and eff["tokens_per_second"] > 0 and eff["time_to_first_token_ms"] > 0
    section = report["generation"]
    assert section["task"] == task and section["n"] == metrics["n"] == 6
    assert section["metrics"] == {name: entry["value"] for name, entry in metrics["metrics"].items()}
    # the headline table states the same numbers and intervals
    rows = {row[0]: row[1:] for row in headline_rows(report)}
    for name, entry in metrics["metrics"].items():
        assert rows[name] == [entry["value"], entry["ci_low"], entry["ci_high"]]
    # predictions.json: one row per decoded row, equal to the examples and to the reference decode
    predictions = json.loads(paths["predictions"].read_text())
    assert len(predictions["ids"]) == len(predictions["predictions"]) == 6
    for example in metrics["examples"]:
        k = predictions["ids"].index(example["id"])
        assert predictions["predictions"][k] == example["prediction"]
        assert predictions["references"][k] == example["references"]
    assert json.loads(paths["json"].read_text())["predictions"] == {"file": "predictions.json", "num_samples": 6}
    md = paths["md"].read_text()
    assert "# polymodal evaluation report (generation)" in md and "### Examples" in md
    assert "### Generation efficiency" in md and "<h3>Examples</h3>" in paths["html"].read_text()


def test_vqa_report_puts_the_blind_baseline_next_to_each_question_type(vqa_run):
    config, run = vqa_run
    report, paths = evaluate_path(run, options=FAST, out=run / "eval_vqa")
    result = json.loads(paths["metrics"].read_text())
    blind = result["blind_baseline"]
    assert set(blind) == {"question_type", "question"} and blind["question"]["n"] == 6
    assert sum(entry["n"] for entry in result["per_type"].values()) == 6
    md = paths["md"].read_text()
    assert "### Per question type" in md and "### Blind (question-only) baseline" in md
    for name, entry in result["per_type"].items():
        by_type = blind["question_type"]["per_type"][name]
        assert f"| {name} | {entry['n']} | {entry['exact_match']:.4f} | {by_type:.4f} |" in md
    assert f"| blind baseline, majority answer per question type | {blind['question_type']['accuracy']:.4f} |" in md
    assert kind_for_report(report).console(report)[-1].startswith("example ")


def test_eval_takes_the_model_directory_and_a_manifest(vqa_run, tmp_path):
    from polymodal.data.builtin.scenes import scene_records
    from polymodal.inference import Predictor
    from polymodal.inference.batch import predict_manifest, read_predictions

    config, run = vqa_run
    run_report, _ = evaluate_path(run / "best", options=FAST, out=tmp_path / "from_best")  # best/ finds its run
    assert run_report["meta"]["run_dir"] == str(run) and run_report["generation"]["n"] == 6
    rows = []
    for k, row in enumerate(scene_records("test", "vqa", 5)):
        Image.fromarray(row["image"]).save(tmp_path / f"s{k}.png")
        rows.append({**{key: v for key, v in row.items() if key != "image"}, "image": f"s{k}.png"})
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, paths = evaluate_path(run, data=str(manifest), options=FAST)
    assert paths["json"].parent == run / "eval_data_eval" and report["meta"]["data"]["source"] == str(manifest)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["n"] == 5 and "blind_baseline" in metrics  # the run's training rows still give the baseline
    # the report's predictions are what `polymodal predict --data` writes for the same rows
    predicted = tmp_path / "predicted.jsonl"
    predict_manifest(Predictor(run), manifest, predicted)
    written = {w["id"]: w["prediction"] for w in read_predictions(predicted)}
    saved = json.loads(paths["predictions"].read_text())
    assert dict(zip(saved["ids"], saved["predictions"])) == written
    assert saved["question_types"] == [r["question_type"] for r in rows]


def test_a_bare_model_directory_needs_data_and_uses_its_saved_decoding(vqa_run, tmp_path):
    import shutil

    config, run = vqa_run
    bare = tmp_path / "bare"
    shutil.copytree(run / "best", bare)
    with pytest.raises(ValueError, match="pass --data MANIFEST"):
        evaluate_path(bare, options=FAST)
    from polymodal.data.builtin.scenes import scene_records

    rows = []
    for k, row in enumerate(scene_records("test", "vqa", 3)):
        Image.fromarray(row["image"]).save(tmp_path / f"s{k}.png")
        rows.append({**{key: v for key, v in row.items() if key != "image"}, "image": f"s{k}.png"})
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, paths = evaluate_path(bare, data=str(manifest), options=ReportOptions(bootstrap=0, efficiency=False,
                                                                                  robustness=False))
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["decoding"] == json.loads((bare / "config.json").read_text())["generate"]
    assert metrics["efficiency"] is None and "ci_low" not in metrics["metrics"]["exact_match"]
    assert "blind_baseline" not in metrics and "no blind baseline" in metrics["blind_baseline_note"]
    assert headline_rows(report)[0][0] == "vqa_accuracy" and headline_rows(report)[0][2] is None


def test_cli_eval_prints_the_metrics_and_compare_refuses_generated_text(vqa_run, capsys):
    from polymodal.cli import main

    _, run = vqa_run
    assert main(["eval", str(run), "--bootstrap", "20", "--out", str(run / "eval_cli")]) == 0
    out = capsys.readouterr().out
    assert "vqa_accuracy" in out and "blind baseline (majority answer per question type)" in out
    assert "metrics.json" in out
    assert main(["eval", "--compare", str(run / "eval_cli"), str(run / "eval_cli")]) == 2
    assert "generated text" in capsys.readouterr().err
