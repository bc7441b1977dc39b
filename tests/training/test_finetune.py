"""Fine-tuning strategies on tiny real presets: what trains, what stays bit-identical, merge and save/load."""

from __future__ import annotations

import pytest
import torch
from finetune_fixtures import snapshot, tiny_batch, tiny_model, train_steps

from polymodal.config import ConfigError
from polymodal.models import MultimodalModel
from polymodal.training.finetune import FinetuneConfig, apply_finetune, parse_finetune_config
from polymodal.training.peft_utils import adaptable_module_names, merge_lora, save_adapter


def _outputs(model, batch=None):
    model.eval()
    with torch.no_grad():
        return model(batch or tiny_batch(seed=7)).logits


def _changed(before, after, prefix=""):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_frozen_encoder_stays_bit_identical_including_batchnorm_stats():
    model = tiny_model()
    summary = apply_finetune(model, {"encoders": {"image": "frozen"}})
    before = snapshot(model)
    train_steps(model, steps=4)
    after = snapshot(model)
    assert not _changed(before, after, "encoders.image.")  # weights and BN running stats
    assert _changed(before, after, "encoders.text.") and _changed(before, after, "head.")
    assert not model.encoders["image"].training  # model.train() inside train_steps did not switch it back
    assert summary.components["encoder.image"].trainable == 0
    assert summary.components["encoder.image"].strategy == "frozen"


def test_linear_probe_trains_only_the_head():
    model = tiny_model()
    summary = apply_finetune(model, {"default": "linear_probe"})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head.") for n in trainable)
    head_params = sum(p.numel() for p in model.head.parameters())
    assert summary.trainable == head_params
    assert summary.total == sum(p.numel() for p in model.parameters())
    before = snapshot(model)
    train_steps(model, steps=3)
    changed = _changed(before, snapshot(model))
    assert changed and all(k.startswith("head.") for k in changed)
    table = summary.format_table()
    assert "TOTAL" in table and "encoder.image" in table
    assert summary.to_dict()["trainable"] == head_params


def test_lora_trains_only_lora_params_and_merged_equals_unmerged(tmp_path):
    model = tiny_model()
    original = snapshot(model)
    cfg = {"default": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": {"text": ["qkv", "proj"]}}}
    summary = apply_finetune(model, cfg)
    encoder_trainable = [n for n, p in model.encoders.named_parameters() if p.requires_grad]
    assert encoder_trainable and all("lora_" in n for n in encoder_trainable)
    # text: only qkv / proj wrapped; image (no mapping entry): every conv layer
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in encoder_trainable if n.startswith("text.")} == {"qkv", "proj"}
    assert any(n.startswith("image.") for n in encoder_trainable)
    assert 0 < summary.components["encoder.text"].share < 0.5
    train_steps(model, steps=4)
    state = snapshot(model)
    for key, value in original.items():  # frozen base weights (renamed under base_layer) did not move
        if key.startswith("encoders."):
            renamed = key if key in state else key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]
            assert torch.equal(state[renamed], value), key
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)  # training moved the adapters off their zero init
    unmerged = _outputs(model)
    merge_lora(model)
    assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
    torch.testing.assert_close(_outputs(model), unmerged, atol=1e-5, rtol=0)
    assert model.finetune is None  # merged: a plain model
    model.save_pretrained(tmp_path / "merged")
    reloaded = MultimodalModel.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(_outputs(reloaded), unmerged, atol=1e-5, rtol=0)


def test_bad_target_module_error_lists_valid_names():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"finetune\.lora\.target_modules.*'qkvv'.*Valid names: .*proj.*qkv"):
        apply_finetune(model, {"encoders": {"text": "lora"}, "lora": {"target_modules": ["qkvv"]}})
    assert "transformer.blocks.0.attn.qkv" in adaptable_module_names(model.encoders["text"])


def test_grouped_convolutions_are_not_adapter_targets():
    """PEFT cannot merge LoRA into a grouped conv (wav2vec2's positional conv): never target one."""
    encoder = torch.nn.Sequential(torch.nn.Conv1d(8, 8, 3, groups=4), torch.nn.Conv1d(8, 8, 3), torch.nn.Linear(8, 8))
    assert adaptable_module_names(encoder) == ["1", "2"]


@pytest.mark.parametrize("method", ["ia3", "loha"])
def test_other_peft_methods_train_only_adapters_and_merge(method):
    model = tiny_model()
    cfg = {"encoders": {"text": method, "image": "frozen"}}
    if method == "ia3":
        cfg["ia3"] = {"target_modules": ["qkv", "proj", "mlp.0", "mlp.3"], "feedforward_modules": ["mlp.3"]}
    apply_finetune(model, cfg)
    marker = "ia3_" if method == "ia3" else "hada_"
    trainable = [n for n, p in model.encoders.named_parameters() if p.requires_grad]
    assert trainable and all(marker in n for n in trainable)
    with torch.no_grad():  # move adapters off their identity init so merging has something to fold in
        for param in model.encoders.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    train_steps(model, steps=2)
    unmerged = _outputs(model)
    merge_lora(model)
    torch.testing.assert_close(_outputs(model), unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize("image_encoder", ["image_vit", "image_cnn"])
def test_prompt_tuning_trains_only_prompts_and_changes_outputs(image_encoder):
    model = tiny_model(image_encoder)
    reference = tiny_model(image_encoder)  # same seed → same weights, no prompts
    batch = tiny_batch(seed=3)
    strategies = {"text": "prompt", "image": "prompt" if image_encoder == "image_vit" else "frozen"}
    apply_finetune(model, {"encoders": strategies, "prompt": {"num_tokens": 3, "init_std": 0.5}})
    encoder_trainable = [n for n, p in model.encoders.named_parameters() if p.requires_grad]
    expected = sorted(f"{m}.prompt_embeddings" for m, s in strategies.items() if s == "prompt")
    assert sorted(encoder_trainable) == expected
    with torch.no_grad():
        prompted, plain = model.eval()(batch), reference.eval()(batch)
    for name in ("image", "text"):  # the token grid is unchanged: prompts are stripped after the transformer
        assert prompted.modality_outputs[name].tokens.shape == plain.modality_outputs[name].tokens.shape
    assert (prompted.modality_outputs["text"].pooled - plain.modality_outputs["text"].pooled).abs().max() > 1e-3
    before = snapshot(model.encoders)
    train_steps(model, steps=3, batch=batch)
    changed = _changed(before, snapshot(model.encoders))
    assert changed == set(expected)


def test_prompt_tuning_on_a_cnn_says_what_to_use_instead():
    with pytest.raises(ValueError, match="prompt tuning needs a transformer.*'image'.*lora, ia3 or frozen"):
        apply_finetune(tiny_model("image_cnn"), {"encoders": {"image": "prompt"}})


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"finetune\.encoders\.audio.*modalities: image, text"):
        apply_finetune(tiny_model(), {"encoders": {"audio": "frozen"}})
    with pytest.raises(ConfigError, match=r"finetune\.default.*'lorra'"):
        parse_finetune_config({"default": "lorra"})
    with pytest.raises(ConfigError, match=r"linear_probe applies to the whole model"):
        apply_finetune(tiny_model(), {"encoders": {"text": "linear_probe"}})
    assert parse_finetune_config(None) == FinetuneConfig()


STRATEGIES = {
    "frozen": {"default": "frozen"},
    "linear_probe": {"default": "linear_probe"},
    "lora": {"default": "lora", "lora": {"r": 2, "target_modules": {"text": ["qkv", "proj"]}}},
    "ia3": {"encoders": {"text": "ia3", "image": "frozen"}},
    "prompt": {"encoders": {"text": "prompt"}, "prompt": {"num_tokens": 2}},
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_save_load_full_and_adapter_forms(strategy, tmp_path):
    base = tiny_model()
    base.save_pretrained(tmp_path / "base")
    model = MultimodalModel.from_pretrained(tmp_path / "base")
    apply_finetune(model, STRATEGIES[strategy])
    train_steps(model, steps=2)
    expected = _outputs(model)

    model.save_pretrained(tmp_path / "full")  # unmerged adapters / prompts: config.json records the strategy
    full = MultimodalModel.from_pretrained(tmp_path / "full")
    torch.testing.assert_close(_outputs(full), expected, atol=1e-5, rtol=0)

    save_adapter(model, tmp_path / "adapter")  # base defaults to the directory the model was loaded from
    adapter = MultimodalModel.from_pretrained(tmp_path / "adapter")
    torch.testing.assert_close(_outputs(adapter), expected, atol=1e-5, rtol=0)
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    full_bytes = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert adapter_bytes < full_bytes / 2  # only what trains is stored


def test_adapter_refuses_a_changed_base(tmp_path):
    base = tiny_model()
    base.save_pretrained(tmp_path / "base")
    model = MultimodalModel.from_pretrained(tmp_path / "base")
    apply_finetune(model, {"default": "frozen"})
    save_adapter(model, tmp_path / "adapter")
    tiny_model(seed=5).save_pretrained(tmp_path / "base")  # the base directory now holds other weights
    with pytest.raises(ValueError, match="changed since the adapter was saved"):
        MultimodalModel.from_pretrained(tmp_path / "adapter")
