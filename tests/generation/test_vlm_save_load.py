"""Save / load round trips, the Hugging Face checkpoint path (tiny GPT-2 / Llama in a temp dir), polymodal encoders."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from polymodal.config import ConfigError
from polymodal.decoders import build_tiny_decoder, train_tokenizer
from polymodal.generation import VisionLanguageModel, VLMConfig

from .vlm_fixtures import TEXTS, TINY_DECODER, PatchEncoder, image, make_model

SAMPLES = [
    {"prompt": "<image>\nwhat is this?", "answer": "a red square", "attachments": {"image": [image(0)]}},
    {"prompt": "describe the picture.", "answer": "two green lines"},
    {"prompt": "<image> <image> same?", "answer": "no", "attachments": {"image": [image(1), image(2)]}},
]


def prompts(samples):
    return [{k: v for k, v in s.items() if k != "answer"} for s in samples]


def assert_same_behaviour(a: VisionLanguageModel, b: VisionLanguageModel, samples=SAMPLES):
    batch = a.collator()(samples)
    assert torch.equal(a(batch).logits, b(b.collator()(samples)).logits)
    options = {"max_new_tokens": 6, "do_sample": False}
    assert a.generate_text(prompts(samples), **options) == b.generate_text(prompts(samples), **options)
    beams = {"max_new_tokens": 6, "do_sample": False, "num_beams": 2}
    assert a.generate_text(prompts(samples), **beams) == b.generate_text(prompts(samples), **beams)


def test_save_load_round_trip_with_a_caller_supplied_encoder(tmp_path):
    model = make_model(tie_word_embeddings=False, initializer_range=0.2)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer"}
    payload = json.loads((tmp_path / "config.json").read_text())
    assert payload["architecture"] == "VisionLanguageModel" and payload["decoder"]["model_type"] == "llama"
    assert payload["custom_encoders"] == ["image"]
    with pytest.raises(ConfigError, match="encoders=\\{'image'"):
        VisionLanguageModel.from_pretrained(tmp_path)
    loaded = VisionLanguageModel.from_pretrained(tmp_path, encoders={"image": PatchEncoder()})
    assert torch.equal(loaded.encoders["image"].proj.weight, model.encoders["image"].proj.weight)
    assert_same_behaviour(model, loaded)


def test_save_load_with_a_polymodal_encoder_and_resampler(tmp_path):
    torch.manual_seed(0)
    config = VLMConfig.from_dict({
        "modalities": {"image": {
            "connector": "resampler", "connector_options": {"num_tokens": 4, "heads": 2},
            "encoder": {"kind": "image", "options": {"channels": [8, 16]}},
        }},
        "decoder": {"options": TINY_DECODER},
    })
    model = VisionLanguageModel.build(config, tokenizer=train_tokenizer(TEXTS, vocab_size=320)).eval()
    assert model.config.modalities["image"].encoder_dim == 16
    samples = [{"prompt": "<image> what is this?", "answer": "a red square",
                "attachments": {"image": [{"pixel_values": torch.rand(3, 16, 16)}]}}]
    model.save_pretrained(tmp_path)
    loaded = VisionLanguageModel.from_pretrained(tmp_path)
    assert_same_behaviour(model, loaded, samples)


def test_unmerged_lora_and_foreign_directories_are_refused(tmp_path):
    model = make_model().apply_lora(r=2)
    with pytest.raises(ConfigError, match="merge_lora"):
        model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="not found"):
        VisionLanguageModel.from_pretrained(tmp_path / "nothing")
    make_model().merge_lora().save_pretrained(tmp_path / "ok")
    payload = json.loads((tmp_path / "ok" / "config.json").read_text())
    payload["architecture"] = "MultimodalModel"
    (tmp_path / "ok" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="architecture is 'MultimodalModel'"):
        VisionLanguageModel.from_pretrained(tmp_path / "ok", encoders={"image": PatchEncoder()})


def save_tiny_gpt2(directory):
    """A GPT-2 checkpoint with a GPT-2-style tokenizer that knows nothing of placeholders or chat templates."""
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, placeholders=())
    tokenizer.save_pretrained(str(directory))
    tokenizer = GPT2TokenizerFast.from_pretrained(str(directory))
    tokenizer.chat_template = None
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(str(directory))


def save_tiny_llama(directory):
    tokenizer = train_tokenizer(TEXTS, vocab_size=320)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    build_tiny_decoder(tokenizer, **TINY_DECODER, tie_word_embeddings=False).save_pretrained(str(directory))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hugging_face_checkpoint_decoder(family, tmp_path):
    (save_tiny_gpt2 if family == "gpt2" else save_tiny_llama)(tmp_path / "lm")
    config = VLMConfig.from_dict({"modalities": {"image": {}}, "decoder": {"pretrained": str(tmp_path / "lm")}})
    torch.manual_seed(0)
    model = VisionLanguageModel.build(config, encoders={"image": PatchEncoder()}).eval()
    tok = model.tokenizer
    assert len(tok("<image>", add_special_tokens=False)["input_ids"]) == 1
    assert model.decoder.get_input_embeddings().num_embeddings >= len(tok)
    # with no attachment, the VLM generates exactly what the checkpoint does from the same prompt ids
    batch = model.collator(for_generation=True)([{"prompt": "what digit is this?"}])
    ours = model.generate(batch, max_new_tokens=5, do_sample=False, num_beams=2)
    reference = model.decoder.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                       max_new_tokens=5, do_sample=False, num_beams=2,
                                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert torch.equal(ours, reference[:, batch.input_ids.shape[1]:])
    out = model(model.collator()(SAMPLES))
    assert torch.isfinite(out.loss) and out.num_tokens > 0
    together = model.generate(model.collator(for_generation=True)(prompts(SAMPLES)), max_new_tokens=5,
                              do_sample=False)
    for i, sample in enumerate(prompts(SAMPLES)):  # left padding: positions come from the attention mask
        alone = model.generate(model.collator(for_generation=True)([sample]), max_new_tokens=5, do_sample=False)[0]
        assert torch.equal(together[i, : alone.shape[0]], alone)
    model.save_pretrained(tmp_path / "vlm")
    loaded = VisionLanguageModel.from_pretrained(tmp_path / "vlm", encoders={"image": PatchEncoder()})
    assert type(loaded.decoder) is type(model.decoder)
    assert_same_behaviour(model, loaded)


def test_code_planted_in_a_saved_model_never_runs(tmp_path, monkeypatch):
    model = make_model()
    model.save_pretrained(tmp_path)
    marker = tmp_path / "ran.txt"
    planted = f"open({str(marker)!r}, 'w').write('ran')\n"
    for folder in (tmp_path, tmp_path / "tokenizer"):
        (folder / "planted.py").write_text(planted)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["decoder"]["auto_map"] = {"AutoConfig": "planted.Config", "AutoModelForCausalLM": "planted.Model"}
    (tmp_path / "config.json").write_text(json.dumps(payload))
    tokenizer_config = json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "planted.PlantedTokenizer"]}
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    try:
        VisionLanguageModel.from_pretrained(tmp_path, encoders={"image": PatchEncoder()})
    except Exception as err:  # refusing is fine too; the point is that nothing ran
        assert "PolymodalError" in [c.__name__ for c in type(err).__mro__], err
    assert not marker.exists()
    payload["decoder"]["model_type"] = "plantedlm"
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="plantedlm"):
        VisionLanguageModel.from_pretrained(tmp_path, encoders={"image": PatchEncoder()})
    assert not marker.exists()


def test_decoder_options_cannot_grant_trust(tmp_path):
    save_tiny_llama(tmp_path / "lm")
    config = VLMConfig.from_dict({"modalities": {"image": {}},
                                  "decoder": {"pretrained": str(tmp_path / "lm"), "options": {"trust_remote_code": True}}})
    with pytest.raises(ConfigError, match="trust_remote_code cannot be set"):
        VisionLanguageModel.build(config, encoders={"image": PatchEncoder()})


def test_too_long_for_the_decoder_is_a_data_error_naming_the_limit():
    from polymodal.data.errors import DataError

    model = make_model(max_position_embeddings=24)
    batch = model.collator(for_generation=True)(prompts(SAMPLES[:1]))
    length = model.embed(batch).inputs_embeds.shape[1]
    with pytest.raises(DataError, match="more than the decoder's 24 positions"):
        model.generate(batch, max_new_tokens=24 - length + 1)
    assert model.generate(batch, max_new_tokens=24 - length, do_sample=False).shape[1] <= 24 - length
    long = [{"prompt": "<image> " + "what is this? " * 10, "answer": "x", "attachments": {"image": [image(0)]}}]
    with pytest.raises(DataError, match="max_position_embeddings"):
        model(model.collator()(long))


def test_files_get_the_umask_modes(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        make_model().save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    for entry in [tmp_path / "m", *(tmp_path / "m").rglob("*")]:
        mode = stat.S_IMODE(entry.stat().st_mode)
        assert mode == (0o755 if entry.is_dir() else 0o644), (entry, oct(mode))
