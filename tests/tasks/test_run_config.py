"""One run config for every task, and one resolver of a saved model's kind: its recorded task (issue #10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polymodal.config import ConfigError, RunConfig, config_to_dict, from_dict, load_config
from polymodal.models import (
    AlignmentModel,
    ModelDirectoryError,
    MultimodalModel,
    read_model_config,
    saved_task,
)
from polymodal.tasks import UnknownTaskError, get_task, load_model, task_of

REPO = Path(__file__).resolve().parents[2]
TINY = {"image": {"kind": "image", "processor": {"image_size": 8, "channels": 1}, "options": {"channels": [4]}},
        "text": {"kind": "text", "options": {"dim": 8, "depth": 1}}}


# Run configs under configs/ (the tune space and the distillation student are other schemas: docs/TUNE.md,
# `polymodal compress --student`).
RUN_CONFIGS = ["spoken_digits_fusion.yaml", "spoken_digits_align.yaml"]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_every_shipped_run_config_loads(name):
    config = load_config(REPO / "configs" / name)
    assert config.task in ("classification", "alignment")
    assert from_dict(RunConfig, config_to_dict(config)) == config  # the saved form reads back the same


def test_the_align_recipe_names_its_task():
    config = load_config(REPO / "configs" / "spoken_digits_align.yaml")
    assert config.task == "alignment" and config.model.embed_dim == 64 and config.zeroshot.classnames is None


def test_a_config_without_task_reads_as_the_one_task_its_keys_belong_to_with_a_warning():
    """Configs written before the task key: an alignment config (embed_dim, objectives, zeroshot) keeps loading,
    with a warning naming the line to add; anything ambiguous or explicit-but-wrong is an error naming the key."""
    from polymodal.config.run import TaskKeyWarning

    with pytest.warns(TaskKeyWarning, match=r"model.embed_dim, model.objectives belong to the alignment task.*"
                                            r"add that line"):
        legacy = from_dict(RunConfig, {"model": {"modalities": TINY, "embed_dim": 8, "objectives": [{"name": "clip"}]}})
    assert legacy.task == "alignment" and legacy.train.monitor == "val_loss"
    with pytest.warns(TaskKeyWarning, match=r"zeroshot belong to the alignment task"):
        assert from_dict(RunConfig, {"zeroshot": {"classnames": ["a", "b"]}}).task == "alignment"
    with pytest.raises(ConfigError, match=r"model.embed_dim: a key of the alignment task's model section, but "
                                          r"the config's task is 'classification'; set `task: alignment`"):
        from_dict(RunConfig, {"task": "classification", "model": {"modalities": TINY, "embed_dim": 8}})
    with pytest.raises(ConfigError, match=r"model.fusion: a key of the classification task's model section"):
        from_dict(RunConfig, {"task": "alignment", "model": {"modalities": TINY, "fusion": {"name": "concat"}}})
    with pytest.raises(ConfigError, match=r"model.embed_dim: a key of the alignment task's model section.*"
                                          r"\(the default\)"):  # keys of two tasks at once: nothing is inferred
        from_dict(RunConfig, {"model": {"modalities": TINY, "embed_dim": 8, "fusion": {"name": "concat"}}})
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' \(did you mean 'train'\?\)"):
        from_dict(RunConfig, {"trian": {}})


def test_monitor_defaults_come_from_the_task():
    assert (RunConfig().train.monitor, RunConfig().train.monitor_mode) == ("val_accuracy", "max")
    aligned = RunConfig(task="alignment")
    assert (aligned.train.monitor, aligned.train.monitor_mode) == ("val_loss", "min")
    # a monitor without a mode: a loss is minimised, anything else maximised (it used to be maximised always)
    assert from_dict(RunConfig, {"train": {"monitor": "val_loss"}}).train.monitor_mode == "min"
    assert from_dict(RunConfig, {"train": {"monitor": "val_macro_f1"}}).train.monitor_mode == "max"
    explicit = from_dict(RunConfig, {"task": "alignment", "train": {"monitor": "val_retrieval_R@1"}})
    assert explicit.train.monitor_mode == "max"


def test_task_sections_read_as_attributes_and_zeroshot_agrees_with_eval():
    config = from_dict(RunConfig, {"task": "alignment", "zeroshot": {"classnames": ["a", "b"]}})
    assert config.zeroshot.classnames == ["a", "b"] == config.eval.class_names
    with pytest.raises(AttributeError, match="has no section 'zeroshot'"):
        RunConfig().zeroshot  # noqa: B018
    with pytest.raises(ConfigError, match="zeroshot.classnames and eval.class_names disagree"):
        from_dict(RunConfig, {"task": "alignment", "zeroshot": {"classnames": ["a"]}, "eval": {"class_names": ["b"]}})


def _batch(model) -> object:
    from polymodal.data import MultimodalDataset
    from polymodal.data.manifest import SampleRow as Row

    rng = torch.Generator().manual_seed(0)
    rows = [Row(id=str(i), inputs={"image": torch.rand(8, 8, generator=rng).numpy(), "text": f"a photo of {i}"},
                label=str(i % 2)) for i in range(4)]
    dataset = MultimodalDataset(rows, model.processors, {"0": 0, "1": 1})
    return dataset.collate([dataset[i] for i in range(4)])


def _legacy(directory: Path, architecture: str, section: str) -> None:
    """Rewrite a saved config.json the way polymodal wrote it before the task field existed."""
    payload = json.loads((directory / "config.json").read_text())
    payload["architecture"] = architecture
    payload[section] = payload.pop("model")
    payload.pop("task")
    (directory / "config.json").write_text(json.dumps(payload))


def test_saved_directories_record_their_task_and_load_by_it(tmp_path):
    torch.manual_seed(0)
    classifier = MultimodalModel(from_dict(RunConfig, {"model": {"modalities": TINY, "head": {"labels": ["0", "1"]},
                                                                "fusion": {"dim": 8}}}).model).eval()
    aligner = AlignmentModel(from_dict(RunConfig, {"task": "alignment",
                                                   "model": {"modalities": TINY, "embed_dim": 8}}).model).eval()
    classifier.save_pretrained(tmp_path / "c")
    aligner.save_pretrained(tmp_path / "a")
    assert saved_task(tmp_path / "c") == "classification" and saved_task(tmp_path / "a") == "alignment"
    batch = _batch(classifier)
    loaded_c, loaded_a = load_model(tmp_path / "c"), load_model(tmp_path / "a")
    assert type(loaded_c) is MultimodalModel and type(loaded_a) is AlignmentModel
    assert task_of(loaded_a).name == "alignment" and get_task("classification").report_kind == "classification"
    with torch.no_grad():
        torch.testing.assert_close(loaded_c(batch).logits, classifier(batch).logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded_a.encode(batch, "text"), aligner.encode(batch, "text"), rtol=0, atol=1e-6)
    # A directory written before the task field existed (architecture + an "alignment" model section) loads too.
    _legacy(tmp_path / "a", "AlignmentModel", "alignment")
    _legacy(tmp_path / "c", "MultimodalModel", "model")
    assert read_model_config(tmp_path / "a")["task"] == "alignment"
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "a").encode(batch, "text"), aligner.encode(batch, "text"),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(load_model(tmp_path / "c")(batch).logits, classifier(batch).logits, rtol=0,
                                   atol=1e-6)


def test_a_directory_of_another_task_or_none_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    AlignmentModel(from_dict(RunConfig, {"task": "alignment", "model": {"modalities": TINY}}).model).save_pretrained(
        tmp_path / "a")
    with pytest.raises(ModelDirectoryError, match=r"a alignment model, not a single classifier|task is 'alignment'"):
        MultimodalModel.from_pretrained(tmp_path / "a")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelDirectoryError, match=r"records no task"):
        load_model(tmp_path / "x")
    (tmp_path / "x" / "config.json").write_text(json.dumps({"task": "segmentation", "model": {}}))
    with pytest.raises(UnknownTaskError, match=r"unknown task 'segmentation'"):
        load_model(tmp_path / "x")
    with pytest.raises(ModelDirectoryError, match=r"config.json not found"):
        load_model(tmp_path / "missing")


def test_adapter_only_directories_load_by_their_recorded_task(tmp_path):
    from polymodal.peft import apply_finetune, save_adapter

    torch.manual_seed(0)
    for task, model_section in (("classification", {"modalities": TINY, "head": {"labels": ["0", "1"]},
                                                    "fusion": {"dim": 8}}),
                                ("alignment", {"modalities": TINY, "embed_dim": 8})):
        config = from_dict(RunConfig, {"task": task, "model": model_section})
        model = get_task(task).build_model(config, ["0", "1"])
        model.save_pretrained(tmp_path / task / "base")
        apply_finetune(model, {"default": "lora", "lora": {"r": 2}})
        for parameter in model.parameters():  # move the adapters off their zero init
            if parameter.requires_grad:
                parameter.data.add_(0.01)
        save_adapter(model, tmp_path / task / "adapter", base_dir=tmp_path / task / "base")
        assert saved_task(tmp_path / task / "adapter") == task
        loaded = load_model(tmp_path / task / "adapter").eval()
        batch = _batch(loaded)
        model.eval()
        with torch.no_grad():
            if task == "alignment":
                torch.testing.assert_close(loaded.encode(batch, "text"), model.encode(batch, "text"), rtol=0,
                                           atol=1e-6)
            else:
                torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=1e-6)
