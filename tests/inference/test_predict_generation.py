"""Generation models (captioning, vqa, transcription, chat) through the general Predictor, batch prediction over a
generation manifest (``polymodal predict --data``); ``polymodal serve``'s /v1/generate is tested in
tests/inference/serve/test_serve_generate.py.

The model is a tiny untrained vqa model built by its task (random weights: greedy decoding gives non-trivial
text), saved to a temp dir; images are built-in scenes written as PNG files. Seconds on a CPU."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from polymodal.config import RunConfig, from_dict
from polymodal.data.errors import DataError
from polymodal.inference import Predictor
from polymodal.inference.batch import predict_manifest, read_predictions
from polymodal.inference.generate import GenerationPredictor
from polymodal.tasks import get_task
from polymodal.tasks.predictions import GeneratedText, PredictionError

TINY_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 256, "initializer_range": 0.5}  # wide logits: random text, not blanks
TINY_IMAGE = {"encoder": {"kind": "image", "processor": {"image_size": 16}, "options": {"channels": [8, 16, 16]}},
              "freeze_encoder": False}
QUESTIONS = ["what color is the square?", "how many objects are there?", "what shape is the red object?"]


def tiny_config(task: str = "vqa") -> RunConfig:
    return from_dict(RunConfig, {
        "task": task, "data": {"name": "scenes", "limit": 8},
        "model": {"modalities": {"image": TINY_IMAGE}, "decoder": {"options": TINY_DECODER},
                  "tokenizer": {"vocab_size": 300}},
        "generate": {"max_new_tokens": 5, "meteor": False}})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model dir, folder of scene PNGs s0..s3.png) of an untrained tiny vqa model."""
    import torch

    from polymodal.data.builtin.scenes import scene_records

    root = tmp_path_factory.mktemp("genpredict")
    torch.manual_seed(0)
    model = get_task("vqa").build_model(tiny_config(), [])
    model.save_pretrained(root / "model")
    for k, row in enumerate(scene_records("test", "vqa", 4)):
        Image.fromarray(row["image"]).save(root / f"s{k}.png")
    return root / "model", root


@pytest.fixture(scope="module")
def predictor(saved):
    return Predictor(saved[0])


def manifest(root, rows, name="rows.jsonl"):
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- Predictor


def test_predictor_loads_a_generation_model_and_generate_is_the_generation_predictor(saved, predictor):
    model_dir, root = saved
    assert predictor.generates and predictor.task_name == "vqa" and predictor.labels == []
    assert not predictor.can_embed and predictor.head_task is None
    other = GenerationPredictor(model_dir)
    image = str(root / "s0.png")
    for question in QUESTIONS:
        text = predictor.generate(question, image=image)
        assert text == other.generate(question, image=image)  # greedy: the same text
    assert any(predictor.generate(q, image=image) for q in QUESTIONS)  # a random decoder says something
    # decoding options go through; the saved defaults (the run's generate section) otherwise
    assert predictor.generator.decoding()["max_new_tokens"] == 5
    short = predictor.generate(QUESTIONS[0], image=image, max_new_tokens=2)
    assert short == other.generate(QUESTIONS[0], image=image, max_new_tokens=2)
    beams = predictor.generate(QUESTIONS[0], image=image, num_beams=2)
    assert beams == other.generate(QUESTIONS[0], image=image, num_beams=2)
    streamed = "".join(predictor.generate(QUESTIONS[0], image=image, stream=True))
    assert streamed.strip() == predictor.generate(QUESTIONS[0], image=image)


def test_predict_takes_a_row_like_sample_and_equals_generate(saved, predictor):
    _, root = saved
    image = str(root / "s1.png")
    expected = predictor.generate(QUESTIONS[1], image=image)
    by_prompt = predictor.predict(prompt=QUESTIONS[1], image=image)
    assert isinstance(by_prompt, GeneratedText) and by_prompt.text == expected and by_prompt.modalities == ["image"]
    assert predictor.predict(text=QUESTIONS[1], image=image).text == expected  # --text is the prompt
    # a manifest row: the final assistant turn is the reference, generated anew
    row = {"messages": [{"role": "user", "content": f"<image>\n{QUESTIONS[1]}"},
                        {"role": "assistant", "content": "2"}], "image": image, "answers": ["2"]}
    assert predictor.predict(row).text == expected
    assert predictor.predict(row).to_dict() == {"prediction": expected, "modalities": ["image"]}


def test_predict_batch_equals_one_by_one(saved, predictor):
    _, root = saved
    rows = [{"prompt": q, "image": str(root / f"s{k}.png")} for k, q in enumerate(QUESTIONS)]
    rows.append({"prompt": "say something"})  # no attachment at all
    batched = [p.text for p in predictor.predict_batch(rows)]
    assert batched == [predictor.predict(row).text for row in rows]
    assert predictor.predict_batch(rows)[-1].modalities == []


def test_generation_requests_the_model_cannot_answer_are_clear(saved, predictor):
    model_dir, root = saved
    image = str(root / "s0.png")
    with pytest.raises(PredictionError, match="generates text; it has no embedding space"):
        predictor.embed(image=image)
    with pytest.raises(PredictionError, match="reads \\['image'\\] attachments, not 'audio'"):
        predictor.predict(prompt="what?", audio=image)
    with pytest.raises(PredictionError, match="zero-shot"):
        Predictor(model_dir, classnames=["a", "b"])
    with pytest.raises(DataError, match=r"image\[0\]: image file .*nope.png' does not exist"):
        predictor.predict(prompt="what?", image=str(root / "nope.png"))
    with pytest.raises(DataError, match="neither 'messages' nor 'prompt'"):
        predictor.predict(image=image)


def test_processor_overrides_reach_a_generation_models_attachments(saved):
    model_dir, root = saved
    capped = Predictor(model_dir, overrides=["model.modalities.image.processor.max_pixels=100"])
    assert capped.model.config.modalities["image"].encoder.processor["max_pixels"] == 100
    with pytest.raises(DataError, match="pixels"):
        capped.predict(prompt="what?", image=str(root / "s0.png"))


def test_generate_on_a_model_of_another_task_says_so(tmp_path):
    from polymodal.config import ModelConfig
    from polymodal.models import MultimodalModel

    model = MultimodalModel(from_dict(ModelConfig, {
        "modalities": {"image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4]},
                                 "processor": {"image_size": 8, "channels": 1}}},
        "fusion": {"name": "concat", "dim": 8}, "head": {"labels": ["a", "b"]}}))
    with pytest.raises(PredictionError, match="classification model does not generate text"):
        Predictor(model).generate("what?")


# ---------------------------------------------------------------------------------------------- batch prediction


def test_predict_manifest_writes_id_and_generated_text_per_row(saved, predictor, tmp_path):
    _, root = saved
    rows = [{"id": f"q{k}", "image": f"s{k}.png", "messages": [{"role": "user", "content": f"<image>\n{q}"},
                                                               {"role": "assistant", "content": "x"}]}
            for k, q in enumerate(QUESTIONS)]
    rows.append({"id": "p", "image": "s3.png", "prompt": "what is this?"})  # placeholders added in front
    path = manifest(root, rows, "good.jsonl")
    out = tmp_path / "predictions.jsonl"
    summary = predict_manifest(predictor, path, out, batch_size=2)
    assert summary["written"] == summary["rows"] == 4 and summary["task"] == "vqa" and summary["skipped"] == []
    written = read_predictions(out)
    assert [w["id"] for w in written] == ["q0", "q1", "q2", "p"]
    expected = [predictor.generate(q, image=str(root / f"s{k}.png")) for k, q in enumerate(QUESTIONS)]
    expected.append(predictor.generate("what is this?", image=str(root / "s3.png")))
    assert [w["prediction"] for w in written] == expected
    assert all(w["modalities"] == ["image"] for w in written)


BAD_ROWS = [
    ({"id": "gone", "image": "missing.png", "prompt": "what?"}, r"row 2 \(id 'gone'\): image\[0\]: image file"),
    ({"id": "nomsg", "image": "s0.png"}, r"row 2 \(id 'nomsg'\): has neither 'messages' nor 'prompt'"),
    ({"id": "q0", "image": "s1.png", "prompt": "again?"}, r"row 2 \(id 'q0'\): duplicate id 'q0'"),
    # two placeholders, one image: found when the batch is tokenised, then named by re-running row by row
    ({"id": "twice", "image": "s1.png", "messages": [{"role": "user", "content": "<image><image>\nwhat?"}]},
     r"row 2 \(id 'twice'\).*placeholder"),
    ({"id": "badrole", "messages": [{"role": "robot", "content": "hi"}]}, r"row 2 \(id 'badrole'\): messages\[0\]"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_ROWS, ids=[b["id"] for b, _ in BAD_ROWS])
def test_a_bad_row_raises_naming_it_or_is_skipped(saved, predictor, tmp_path, bad, message):
    _, root = saved
    good = [{"id": "q0", "image": "s0.png", "prompt": QUESTIONS[0]}, {"id": "q2", "image": "s2.png", "prompt": "hi"}]
    path = manifest(root, [good[0], bad, good[1]], f"bad-{bad['id']}.jsonl")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    with pytest.raises(DataError, match=message):
        predict_manifest(predictor, path, out, batch_size=8)
    assert out.read_text() == "previous\n"  # atomic: a failure leaves the old file as it was
    with pytest.warns(UserWarning, match="skipped 1 of 3 rows"):
        summary = predict_manifest(predictor, path, out, on_error="skip", batch_size=8)
    assert [w["id"] for w in read_predictions(out)] == ["q0", "q2"]
    assert len(summary["skipped"]) == 1 and summary["skipped"][0]["reason"].startswith(str(path))
    assert summary["skipped"][0]["where"] == f"{path}: row 2 (id {bad['id']!r})"
    assert read_predictions(out)[0]["prediction"] == predictor.generate(QUESTIONS[0], image=str(root / "s0.png"))


def test_a_csv_or_missing_manifest_is_refused(saved, predictor, tmp_path):
    _, root = saved
    (root / "rows.csv").write_text("id,image,prompt\na,s0.png,what?\n")
    with pytest.raises(DataError, match="JSON Lines"):
        predict_manifest(predictor, root / "rows.csv", tmp_path / "o.jsonl")
    with pytest.raises(DataError, match="not found"):
        predict_manifest(predictor, root / "none.jsonl", tmp_path / "o.jsonl")


def test_cli_predict_for_a_generation_model(saved, predictor, tmp_path, capsys):
    from polymodal.cli import main

    model_dir, root = saved
    image = str(root / "s0.png")
    assert main(["predict", str(model_dir), "--image", image, "--text", QUESTIONS[0]]) == 0
    assert capsys.readouterr().out.strip() == predictor.generate(QUESTIONS[0], image=image)
    assert main(["predict", str(model_dir), "--image", image, "--text", QUESTIONS[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == predictor.generate(QUESTIONS[0], image=image)
    path = manifest(root, [{"id": "a", "image": "s0.png", "prompt": QUESTIONS[0]},
                           {"id": "b", "image": "missing.png", "prompt": "x"}], "cli.jsonl")
    out = tmp_path / "cli_out.jsonl"
    assert main(["predict", str(model_dir), "--data", str(path), "--out", str(out)]) == 2
    assert "row 2 (id 'b')" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(model_dir), "--data", str(path), "--out", str(out), "--on-error", "skip"]) == 0
    printed = capsys.readouterr()
    assert "wrote 1 vqa predictions of 2 rows" in printed.out and "row 2 (id 'b')" in printed.err
    assert read_predictions(out) == [{"id": "a", "prediction": predictor.generate(QUESTIONS[0], image=image),
                                      "modalities": ["image"]}]
