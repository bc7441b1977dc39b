"""The generation tasks (captioning, vqa, transcription, chat) in the task layer: configs, data, a tiny end-to-end
``recipes.train`` run per task, test metrics, save → load → identical generations, LoRA stage 2, stage 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.config import ConfigError, RunConfig, from_dict
from polymodal.data.errors import DataError
from polymodal.tasks import get_task, load_model
from polymodal.tasks.generation import load_rows

TINY_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 256}
TINY_IMAGE = {"encoder": {"kind": "image", "processor": {"image_size": 16}, "options": {"channels": [8, 16, 16]}},
              "freeze_encoder": False}


def tiny_config(task: str, tmp_path, **sections) -> RunConfig:
    """A few scenes (or spoken digits), a 2-layer 32-wide decoder, one epoch: seconds on a CPU."""
    data = {"name": "scenes", "limit": 12, "batch_size": 4, "eval_batch_size": 6}
    model = {"modalities": {"image": TINY_IMAGE}, "decoder": {"options": TINY_DECODER},
             "tokenizer": {"vocab_size": 300}}
    plain = {"task": task, "data": data, "model": model,
             "train": {"epochs": 1, "out_dir": str(tmp_path / "run"), "progress": False, "log_every": 0, "lr": 3e-3},
             "generate": {"max_new_tokens": 6, "validate_samples": 4, "bootstrap": 20, "meteor": False}}
    for key, value in sections.items():
        plain[key] = {**plain.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(RunConfig, plain)


# ---------------------------------------------------------------------------------------------- config


def test_generation_tasks_read_their_sections_with_task_defaults():
    config = from_dict(RunConfig, {"task": "vqa", "data": {"name": "scenes"}})
    assert list(config.model.modalities) == ["image"]
    assert config.model.modalities["image"].encoder.kind == "image"
    assert config.model.modalities["image"].placeholder == "<image>"
    assert (config.train.monitor, config.train.monitor_mode) == ("val_loss", "min")
    assert config.generate.max_new_tokens == 32
    assert list(from_dict(RunConfig, {"task": "transcription"}).model.modalities) == ["audio"]
    assert list(from_dict(RunConfig, {"task": "chat"}).model.modalities) == ["image", "audio"]
    assert from_dict(RunConfig, {"task": "chat", "generate": {"num_beams": 3}}).generate.generate_kwargs() == {
        "max_new_tokens": 32, "num_beams": 3, "do_sample": False, "repetition_penalty": 1.0}


def test_generation_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.lora"):
        from_dict(RunConfig, {"task": "captioning", "model": {"stage": 1, "lora": {"r": 4}}})
    with pytest.raises(ConfigError, match="finetune.*model.stage"):
        from_dict(RunConfig, {"task": "captioning", "finetune": "lora"})
    with pytest.raises(ConfigError, match="generate.max_new_tokens"):
        from_dict(RunConfig, {"task": "vqa", "generate": {"max_new_tokens": 0}})
    with pytest.raises(ConfigError, match="model.modalities.depth.encoder"):
        from_dict(RunConfig, {"task": "vqa", "model": {"modalities": {"depth": {}}}})
    with pytest.raises(ConfigError, match="generate: this section belongs to the"):
        from_dict(RunConfig, {"generate": {"max_new_tokens": 3}})  # a classification config
    with pytest.raises(ConfigError, match="no transcription rows"):
        load_rows(from_dict(RunConfig, {"task": "transcription", "data": {"name": "scenes"}}), "train")
    with pytest.raises(ConfigError, match="not a built-in generation set"):
        load_rows(from_dict(RunConfig, {"task": "vqa", "data": {"name": "cifar"}}), "train")


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    from polymodal.recipes.train import train

    tmp = tmp_path_factory.mktemp("caption")
    config = tiny_config("captioning", tmp)
    return config, train(config, verbose=False)


def test_captioning_trains_end_to_end_with_test_metrics(caption_run):
    config, summary = caption_run
    assert summary["task"] == "captioning"
    history = json.loads(open(f"{summary['run_dir']}/metrics.json").read())["fit"]
    assert np.isfinite(summary["fit"]["best_metric"])
    test = summary["test"]
    assert test["n"] == 12
    assert {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d", "rouge_l_coco"} <= set(test["metrics"])
    for entry in test["metrics"].values():
        assert entry["value"] >= 0
        if "ci_low" in entry:
            assert entry["ci_low"] <= entry["value"] + 1e-9 <= entry["ci_high"] + 2e-9
    assert test["efficiency"]["tokens_per_second"] >= 0 and test["efficiency"]["time_to_first_token_ms"] > 0
    assert len(test["examples"]) == 5 and all(len(e["references"]) == 3 for e in test["examples"])
    assert history is not None


def test_saved_run_reloads_by_its_task_with_identical_generations(caption_run):
    config, summary = caption_run
    payload = json.loads(open(f"{summary['model_dir']}/config.json").read())
    assert payload["task"] == "captioning" and payload["generate"]["max_new_tokens"] == 6
    first, second = load_model(summary["model_dir"]), load_model(summary["model_dir"])
    assert first.task_name == "captioning"
    loader = get_task("captioning").prepare_data(config, ("test",)).loaders["test"]
    batch = next(iter(loader))
    with torch.no_grad():
        assert torch.equal(first(batch).logits, second(batch).logits)
    samples = [{k: v for k, v in s.items() if k != "answers"} for s in batch.samples]
    for sample in samples:
        sample["messages"] = sample["messages"][:-1]  # the prompt
    assert first.generate_text(samples, max_new_tokens=8) == second.generate_text(samples, max_new_tokens=8)
    beams = first.generate_text(samples[:2], max_new_tokens=5, num_beams=2)
    assert len(beams) == 2


def test_vqa_trains_end_to_end_with_accuracy_per_type_and_blind_baseline(tmp_path):
    from polymodal.recipes.train import train

    summary = train(tiny_config("vqa", tmp_path), verbose=False)
    test = summary["test"]
    assert {"vqa_accuracy", "exact_match"} <= set(test["metrics"])
    assert 0 <= test["metrics"]["exact_match"]["value"] <= 1
    assert set(test["per_type"]) <= {"color", "shape", "count", "left_right", "nearest"}
    assert sum(entry["n"] for entry in test["per_type"].values()) == test["n"] == 12
    blind = test["blind_baseline"]
    assert set(blind) == {"question_type", "question"}
    assert 0 <= blind["question_type"]["accuracy"] <= 1 and blind["question"]["n"] == 12
    assert "val_vqa_accuracy" in summary["fit"]["history"][-1]


def test_lora_stage_two_saves_a_merged_model_and_stage_one_trains_connectors_only(tmp_path):
    from polymodal.recipes.train import train

    task = get_task("captioning")
    stage1 = tiny_config("captioning", tmp_path / "s1", model={"stage": 1})
    model = task.build_model(stage1, [])
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"connectors"}

    config = tiny_config("captioning", tmp_path, model={"lora": {"r": 2, "alpha": 4}})
    summary = train(config, verbose=False)
    assert summary["parameters"]["trainable"] < summary["parameters"]["total"]
    loaded = load_model(summary["model_dir"])
    assert not any("lora_" in name for name, _ in loaded.named_parameters())  # merged into the weights
    assert np.isfinite(summary["test"]["metrics"]["cider_d"]["value"])


def test_stage_two_starts_from_a_stage_one_model(tmp_path, caption_run):
    _, summary = caption_run
    config = tiny_config("captioning", tmp_path, model={"init_from": summary["model_dir"]})
    model = get_task("captioning").build_model(config, [])
    start = load_model(summary["model_dir"])
    assert torch.equal(model.connectors["image"].state_dict()["net.0.weight"] if "net.0.weight" in
                       model.connectors["image"].state_dict() else next(iter(model.connectors.parameters())),
                       start.connectors["image"].state_dict()["net.0.weight"] if "net.0.weight" in
                       start.connectors["image"].state_dict() else next(iter(start.connectors.parameters())))
    assert len(model.tokenizer) == len(start.tokenizer)


# ---------------------------------------------------------------------------------------------- data


def write_manifest(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def scene_png(tmp_path, name, color):
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[4:12, 4:12] = color
    Image.fromarray(pixels).save(tmp_path / name)
    return name


def test_manifest_rows_with_several_references_and_multi_turn_chat(tmp_path):
    red, blue = scene_png(tmp_path, "red.png", (255, 0, 0)), scene_png(tmp_path, "blue.png", (0, 0, 255))
    rows = [
        {"id": "a", "image": red, "messages": [{"role": "user", "content": "<image>\nwhat color?"},
                                               {"role": "assistant", "content": "red"}],
         "answers": ["red", "scarlet"]},
        {"id": "b", "image": [red, blue],
         "messages": [{"role": "user", "content": "<image><image>\nfirst color?"},
                      {"role": "assistant", "content": "red"},
                      {"role": "user", "content": "and the second?"}, {"role": "assistant", "content": "blue"}]},
        {"id": "c", "prompt": "say hi", "answer": "hi"},  # no attachment
    ]
    path = write_manifest(tmp_path, rows)
    config = from_dict(RunConfig, {"task": "chat", "data": {"train": str(path), "batch_size": 3},
                                   "model": {"modalities": {"image": TINY_IMAGE}}})
    prepared = get_task("chat").prepare_data(config, ("train",))
    dataset = prepared.loaders["train"].dataset  # the train loader shuffles: read the rows in order
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    assert [s["answers"] for s in batch.samples] == [["red", "scarlet"], ["blue"], ["hi"]]
    assert [len(s["attachments"].get("image", [])) for s in batch.samples] == [1, 2, 0]
    assert batch.samples[0]["attachments"]["image"][0]["pixel_values"].shape == (3, 16, 16)
    from polymodal.tasks.generation import training_texts

    assert "and the second?" in training_texts(rows) and "scarlet" in training_texts(rows)


def test_bad_manifest_rows_name_the_file_and_row_or_are_skipped(tmp_path):
    good = {"id": "ok", "image": scene_png(tmp_path, "ok.png", (0, 255, 0)), "prompt": "<image> what?", "answer": "x"}
    rows = [good, {"id": "gone", "image": "missing.png", "prompt": "<image> what?", "answer": "x"},
            {"id": "nomsg", "text": "hello"}]
    path = write_manifest(tmp_path, rows)
    config = from_dict(RunConfig, {"task": "vqa", "data": {"train": str(path)},
                                   "model": {"modalities": {"image": TINY_IMAGE}}})
    with pytest.raises(DataError, match=r"rows.jsonl: row 2 \(id 'gone'\): image\[0\]"):
        get_task("vqa").prepare_data(config, ("train",))
    skip = from_dict(RunConfig, {"task": "vqa", "data": {"train": str(path), "on_error": "skip"},
                                 "model": {"modalities": {"image": TINY_IMAGE}}})
    dataset = get_task("vqa").prepare_data(skip, ("train",)).loaders["train"].dataset
    assert [r["id"] for r in dataset.rows] == ["ok"] and len(dataset.skipped) == 2
    assert "row 3 (id 'nomsg')" in dataset.skipped[1] and "neither 'messages' nor 'prompt'" in dataset.skipped[1]


def test_spoken_digit_transcription_and_chat_rows_prepare(tmp_path):
    config = from_dict(RunConfig, {"task": "transcription", "data": {"name": "spoken-digits", "limit": 4}})
    batch = next(iter(get_task("transcription").prepare_data(config, ("test",)).loaders["test"]))
    assert all(len(s["answers"]) == 1 and s["answers"][0].isalpha() for s in batch.samples)
    assert "features" in batch.samples[0]["attachments"]["audio"][0] or batch.samples[0]["attachments"]["audio"][0]
    chat = from_dict(RunConfig, {"task": "chat", "data": {"name": "spoken-digits", "limit": 4}})
    sample = next(iter(get_task("chat").prepare_data(chat, ("test",)).loaders["test"])).samples[0]
    assert set(sample["attachments"]) == {"image", "audio"} and sample["answers"][0] in ("yes", "no")
    assert len(sample["messages"]) == 4


# ---------------------------------------------------------------------------------------------- API and CLI


@pytest.fixture
def scene_file(tmp_path):
    from polymodal.data.builtin.scenes import scene_records

    path = tmp_path / "scene.png"
    Image.fromarray(scene_records("test", "caption", 1)[0]["image"]).save(path)
    return str(path)


def test_generation_predictor_matches_the_model_and_streams_the_same_text(caption_run, scene_file):
    from polymodal.inference.generate import GenerationPredictor

    _, summary = caption_run
    predictor = GenerationPredictor(summary["run_dir"])  # a run directory resolves to best/
    answer = predictor.generate("describe the picture.", image=scene_file, max_new_tokens=8)
    inputs = predictor.process({"image": [scene_file]})
    direct = predictor.model.generate_text(
        [{"messages": [{"role": "user", "content": "<image>\ndescribe the picture."}], "attachments": inputs}],
        **{**predictor.model.generation_defaults, "max_new_tokens": 8})
    assert answer == direct[0]
    streamed = "".join(predictor.generate("describe the picture.", image=scene_file, stream=True, max_new_tokens=8))
    assert streamed.strip() == answer
    with pytest.raises(DataError, match=r"reads \['image'\] attachments, not \['audio'\]"):
        predictor.generate("what?", audio=scene_file)


def test_generate_cli_prints_the_answer(caption_run, scene_file, capsys):
    from polymodal.cli import main
    from polymodal.inference.generate import GenerationPredictor

    _, summary = caption_run
    expected = GenerationPredictor(summary["model_dir"]).generate("describe the picture.", image=scene_file)
    assert main(["generate", summary["model_dir"], "--image", scene_file]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(["generate", summary["model_dir"], "--image", scene_file, "--stream"]) == 0
    assert capsys.readouterr().out.strip() == expected
    assert main(["generate", summary["model_dir"], "--image", scene_file, "--json", "--prompt", "what?"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == "what?"
    assert main(["generate", summary["model_dir"], "--audio", scene_file]) == 2
    assert "reads ['image'] attachments" in capsys.readouterr().err


def test_chat_reads_a_conversation_from_stdin(caption_run, scene_file, capsys, monkeypatch):
    import io

    from polymodal.cli import main
    from polymodal.inference.generate import GenerationPredictor

    _, summary = caption_run
    conversation = GenerationPredictor(summary["model_dir"]).conversation()
    conversation.attach("image", scene_file)
    first = conversation.ask("describe the picture.")
    second = conversation.ask("again?")
    assert [m["role"] for m in conversation.messages] == ["user", "assistant"] * 2
    assert conversation.messages[0]["content"].startswith("<image>\n")
    conversation.reset()
    fresh = conversation.ask("hello")
    script = f"/image {scene_file}\ndescribe the picture.\nagain?\n/reset\nhello\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert main(["chat", summary["model_dir"], "--no-stream"]) == 0
    assert capsys.readouterr().out.splitlines() == [first, second, fresh]
    monkeypatch.setattr("sys.stdin", io.StringIO("/video x.mp4\n"))
    assert main(["chat", summary["model_dir"]]) == 2
    assert "unknown command '/video'" in capsys.readouterr().err


def test_scene_records_are_the_files_rows_in_memory(tmp_path):
    from polymodal.data.builtin.generation_format import read_jsonl
    from polymodal.data.builtin.scenes import build_scenes, scene_records

    paths = build_scenes(tmp_path, sizes={"val": 4})
    for task in ("caption", "vqa"):
        rows = scene_records("val", task, 4)
        written = read_jsonl(paths["val"][task])
        assert [r["id"] for r in rows] == [r["id"] for r in written]
        assert [r["messages"] for r in rows] == [r["messages"] for r in written]
        for row, file_row in zip(rows, written):
            assert np.array_equal(row["image"], np.asarray(Image.open(tmp_path / file_row["image"]).convert("RGB")))
    with pytest.raises(ValueError, match="no 'chat' rows"):
        scene_records("val", "chat", 2)


def test_demo_recipes_are_valid_run_configs_and_baselines_score_what_they_say():
    from polymodal.metrics.generation import cider_d
    from polymodal.recipes.demos.generation import (
        constant_caption_baseline,
        demo_config,
        majority_answer_baseline,
    )

    assert [demo_config(t, "out").task for t in ("caption", "vqa", "chat")] == ["captioning", "vqa", "chat"]
    from polymodal.recipes.demos.generation import QUICK_ROWS

    assert {t: demo_config(t, "out", quick=True).data.limit for t in QUICK_ROWS} == QUICK_ROWS
    assert demo_config("vqa", "out").model.modalities["image"].encoder.options["positions"] is True
    train = [{"answers": ["a red circle"]}, {"answers": ["a red circle"]}, {"answers": ["a blue square"]}]
    test = [{"answers": ["a red circle", "one shape: a red circle"]}, {"answers": ["a green triangle"]}]
    constant = constant_caption_baseline(train, test)
    assert constant["caption"] == "a red circle"
    expected = cider_d(["a red circle"] * 2, [r["answers"] for r in test]).value
    assert constant["metrics"]["cider_d"] == pytest.approx(expected)
    majority = majority_answer_baseline([{"answers": ["yes"]}, {"answers": ["no"]}, {"answers": ["no"]}],
                                        [{"answers": ["no"]}, {"answers": ["yes"]}, {"answers": ["no"]}])
    assert majority == {"answer": "no", "exact_match": pytest.approx(2 / 3)}


def test_scenes_vqa_training_split_mixes_in_captions_of_other_scenes():
    from polymodal.recipes.demos.generation import demo_config
    from polymodal.tasks.generation import load_rows

    config = demo_config("vqa", "out")
    config.data.limit = 20
    train, test = load_rows(config, "train")[0], load_rows(config, "test")[0]
    questions = [r for r in train if r["task"] == "vqa"]
    captions = [r for r in train if r["task"] == "caption"]
    assert len(captions) == 20 and len(questions) > 20  # dense: several questions per scene
    assert all("question_type" not in r and r["messages"][0]["content"].endswith("describe the picture.")
               for r in captions)
    # captions come from other scenes than the questions
    assert not {r["image"].tobytes() for r in captions} & {r["image"].tobytes() for r in questions}
    # scoring rows stay the strict one-question-per-scene form
    assert len(test) == 20 and all(r["task"] == "vqa" and "question_type" in r for r in test)
