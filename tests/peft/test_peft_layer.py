"""polymodal.peft below the models: adapter directories split into read / attach, moved bases, what an adapter
stores, and the old training.* names still reaching the same objects."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from polymodal.config import ConfigError, ModalityConfig, ModelConfig, from_dict, resolve_encoder_name
from polymodal.config.finetune import FinetuneConfig, is_trivial, parse_finetune_config
from polymodal.models import WEIGHTS_NAME, MultimodalModel, load_adapter
from polymodal.peft import apply_finetune, parameter_summary, save_adapter, trainable_state_dict
from polymodal.peft.adapters import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    BASE_WEIGHTS_NAME,
    attach_adapter,
    read_adapter,
)
from polymodal.types import Batch

LABELS = ["a", "b", "c"]


def tiny_model(seed: int = 0) -> MultimodalModel:
    """image (CNN with BatchNorm) + text (1-block transformer), widths 4-16."""
    config = from_dict(ModelConfig, {
        "modalities": {
            "image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8], "dropout": 0.0}},
            "text": {"kind": "text", "encoder": "text_transformer",
                     "options": {"vocab_size": 30, "dim": 16, "depth": 1, "heads": 2, "max_positions": 8,
                                 "dropout": 0.0}},
        },
        "fusion": {"dim": 8}, "head": {"labels": LABELS, "dropout": 0.0},
    }, "model")
    torch.manual_seed(seed)
    return MultimodalModel(config)


def tiny_batch(size: int = 4) -> Batch:
    gen = torch.Generator().manual_seed(1)
    return Batch(
        inputs={"image": {"pixel_values": torch.randn(size, 3, 8, 8, generator=gen)},
                "text": {"input_ids": torch.randint(2, 30, (size, 6), generator=gen),
                         "attention_mask": torch.ones(size, 6, dtype=torch.long)}},
        present={"image": torch.ones(size, dtype=torch.bool), "text": torch.ones(size, dtype=torch.bool)},
        labels=torch.randint(0, len(LABELS), (size,), generator=gen),
    )


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tiny_batch()).logits


def nudge_trainable(model, amount: float = 0.05) -> None:
    """Move what trains off its initial value (LoRA B starts at zero), as training would."""
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(amount * torch.randn_like(param))


@pytest.fixture
def lora_adapter(tmp_path):
    tiny_model().save_pretrained(tmp_path / "base")
    model = MultimodalModel.from_pretrained(tmp_path / "base")
    apply_finetune(model, {"default": "lora", "lora": {"r": 2, "target_modules": {"text": ["qkv"]}}})
    nudge_trainable(model)
    save_adapter(model, tmp_path / "adapter")
    return model, tmp_path


def test_the_base_weights_name_is_the_model_layers():
    assert BASE_WEIGHTS_NAME == WEIGHTS_NAME


def test_adapter_directory_holds_only_what_trains(lora_adapter):
    model, root = lora_adapter
    payload = json.loads((root / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    assert payload["finetune"]["default"] == "lora" and payload["base_model"] == str((root / "base").resolve())
    stored = set(load_file(str(root / "adapter" / ADAPTER_WEIGHTS_NAME)))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert stored == trainable  # adapters + projections + fusion + head; no frozen base weight, no locked BN stats
    assert all("lora_" in k for k in stored if k.startswith("encoders."))


def test_read_then_attach_equals_from_pretrained(lora_adapter):
    model, root = lora_adapter
    expected = logits(model)
    files = read_adapter(root / "adapter")
    assert files.base.resolve() == (root / "base").resolve()
    rebuilt = attach_adapter(tiny_model(seed=9), files)  # other initial weights: everything comes from the files
    torch.testing.assert_close(logits(rebuilt), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(MultimodalModel.from_pretrained(root / "adapter")), expected, atol=1e-6, rtol=0)
    assert not rebuilt.training and rebuilt.pretrained_dir == str(files.base)


def test_a_moved_base_is_named_then_found_with_base_dir(lora_adapter):
    model, root = lora_adapter
    expected = logits(model)
    shutil.move(root / "base", root / "moved")
    with pytest.raises(FileNotFoundError, match=r"its base model .*base is missing.*base_dir="):
        MultimodalModel.from_pretrained(root / "adapter")
    torch.testing.assert_close(logits(load_adapter(root / "adapter", base_dir=root / "moved")), expected,
                               atol=1e-6, rtol=0)


def test_attach_refuses_weights_the_model_lacks(lora_adapter):
    _, root = lora_adapter
    files = read_adapter(root / "adapter")
    files.adapter_state["encoders.text.no_such.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=rf"{ADAPTER_WEIGHTS_NAME} has weights the model lacks: .*no_such"):
        attach_adapter(tiny_model(), files)


def test_a_non_adapter_directory_is_refused_by_format(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ADAPTER_CONFIG_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a polymodal adapter"):
        read_adapter(tmp_path / "x")


def test_fully_trained_batchnorm_statistics_travel_with_the_adapter(tmp_path):
    """A 'full' image CNN updates its BatchNorm running statistics: they must be stored; a frozen one's not."""
    model = tiny_model()
    apply_finetune(model, {"encoders": {"text": "frozen"}})
    state = trainable_state_dict(model)
    assert any(k.startswith("encoders.image.") and k.endswith("running_mean") for k in state)
    assert not any(k.startswith("encoders.text.") for k in state)
    adapted = tiny_model()
    apply_finetune(adapted, {"encoders": {"image": "lora"}})  # adapted encoders lock their norm layers in eval
    stored = trainable_state_dict(adapted)
    assert not any(k.startswith("encoders.image.") and "lora_" not in k for k in stored)


def test_parameter_summary_counts_match_requires_grad():
    model = tiny_model()
    summary = apply_finetune(model, {"default": "frozen"})
    assert summary.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.components["encoder.image"].trainable == 0
    assert parameter_summary(tiny_model()).trainable_share == 1.0


def test_config_section_is_pure_data():
    assert is_trivial(None) and is_trivial("full") and not is_trivial({"encoders": {"text": "lora"}})
    assert parse_finetune_config("ia3") == FinetuneConfig(default="ia3")
    with pytest.raises(ConfigError, match=r"finetune\.lora\.r: must be >= 1"):
        parse_finetune_config({"lora": {"r": 0}})


def test_auto_encoder_names_are_config_data():
    from polymodal.encoders import DEFAULT_PRESETS
    from polymodal.encoders import resolve_encoder_name as from_encoders

    assert from_encoders is resolve_encoder_name
    for kind, preset in DEFAULT_PRESETS.items():
        assert resolve_encoder_name(ModalityConfig(kind=kind)) == preset
    assert resolve_encoder_name(ModalityConfig(kind="text", pretrained="org/model")) == "hf"
    with pytest.raises(ConfigError, match="unknown modality kind 'video'"):
        resolve_encoder_name(ModalityConfig(kind="video"))  # type: ignore[arg-type]


def test_old_training_paths_reach_the_same_objects():
    import polymodal.config.finetune as config_finetune
    import polymodal.config.finetune_warnings as warnings_module
    import polymodal.model as model_module
    import polymodal.peft as peft
    from polymodal.peft import lora, prompt
    from polymodal.training import finetune, finetune_warnings, peft_utils, prompt_tuning

    assert finetune.apply_finetune is peft.apply_finetune
    assert finetune.FinetuneConfig is config_finetune.FinetuneConfig
    assert finetune.parse_finetune_config is config_finetune.parse_finetune_config
    assert finetune.STRATEGY_DESCRIPTIONS is config_finetune.STRATEGY_DESCRIPTIONS
    assert peft_utils.save_adapter is peft.save_adapter and peft_utils.merge_lora is lora.merge_adapters
    assert peft_utils.load_adapter is model_module.load_adapter
    assert prompt_tuning.add_prompt_tuning is prompt.add_prompt_tuning
    assert finetune_warnings.FinetuneWarning is warnings_module.FinetuneWarning


def test_atomic_writers_moved_to_files_and_still_reachable_from_model(tmp_path):
    import polymodal.model as model_module
    from polymodal import files

    assert model_module.atomic_write_text is files.atomic_write_text
    assert model_module.atomic_save_safetensors is files.atomic_save_safetensors
    weight = torch.arange(6.0).reshape(2, 3)
    files.atomic_save_safetensors({"w": weight, "tied": weight}, tmp_path / "w.safetensors")  # shared memory
    loaded = load_file(str(tmp_path / "w.safetensors"))
    assert torch.equal(loaded["w"], weight) and torch.equal(loaded["tied"], weight)
    files.atomic_write_text(tmp_path / "t.json", "{}")
    assert (tmp_path / "t.json").read_text() == "{}" and not list(tmp_path.glob(".*.tmp"))
