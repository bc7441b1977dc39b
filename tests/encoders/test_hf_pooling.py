"""Sentence-transformers checkpoints pool as their modules.json / 1_Pooling/config.json say, everywhere the encoder
is built (fresh, saved + reloaded, alignment models), pinned to sentence-transformers' own Pooling module."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from hf_fixtures import save_tiny_bert
from transformers import AutoModel, AutoTokenizer

from polymodal.config import ConfigError, ModalityConfig, ModelConfig, from_dict
from polymodal.data import build_processor
from polymodal.encoders import build_encoder
from polymodal.encoders.pooling import pool_tokens, read_sentence_transformers
from polymodal.models import MultimodalModel

TEXTS = ["one", "the number seven is a digit", "two three", "a handwritten spoken nine"]  # 3..8 tokens
TOLERANCE = 1e-5
LEGACY_KEY = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
              "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
              "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def write_st_layout(directory, pooling: dict, normalize: bool = False, extra_modules=()):
    """Add modules.json + 1_Pooling/config.json (+ 2_Normalize) to a saved HF checkpoint directory."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    modules.extend(extra_modules)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    return directory


def st_checkpoint(tmp_path, mode: str = "mean", normalize: bool = False, name: str = "st"):
    directory = save_tiny_bert(tmp_path / name)
    flags = {key: key == LEGACY_KEY[mode] for key in LEGACY_KEY.values()}
    return write_st_layout(directory, flags, normalize)


def polymodal_pooled(checkpoint, texts=TEXTS, **options):
    cfg = ModalityConfig(kind="text", pretrained=str(checkpoint), options=options)
    processor = build_processor(cfg, "text")
    encoder = build_encoder(cfg, name="text").eval()
    inputs = processor.collate([processor(text) for text in texts])
    with torch.no_grad():
        out = encoder(inputs, torch.ones(len(texts), dtype=torch.bool))
    return out, inputs, encoder


def hf_hidden(checkpoint, inputs):
    model = AutoModel.from_pretrained(str(checkpoint)).eval()
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])


def test_default_pooling_is_the_declared_masked_mean_not_the_pooler(tmp_path):
    checkpoint = st_checkpoint(tmp_path, "mean")
    out, inputs, _ = polymodal_pooled(checkpoint)
    reference = hf_hidden(checkpoint, inputs)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    assert len(set(inputs["attention_mask"].sum(1).tolist())) > 2, "lengths differ, so padding matters"
    mean = (reference.last_hidden_state * mask).sum(1) / mask.sum(1)  # hand-computed masked mean
    assert (out.pooled - mean).abs().max() < TOLERANCE
    assert (out.pooled - reference.pooler_output).abs().max() > 0.1


def test_without_modules_json_auto_keeps_the_pooler(tmp_path):
    checkpoint = save_tiny_bert(tmp_path / "plain")
    out, inputs, _ = polymodal_pooled(checkpoint)
    assert (out.pooled - hf_hidden(checkpoint, inputs).pooler_output).abs().max() < TOLERANCE


@pytest.mark.parametrize("mode", ["cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken"])
def test_every_declared_mode_matches_sentence_transformers(tmp_path, mode):
    st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
    checkpoint = st_checkpoint(tmp_path, mode)
    out, inputs, encoder = polymodal_pooled(checkpoint)
    assert encoder.pooling_modes == (mode,)
    tokens = hf_hidden(checkpoint, inputs).last_hidden_state
    st_mode = "mean_sqrt_len_tokens" if mode == "mean_sqrt_len" else mode
    pooling = st_modules.Pooling(32, pooling_mode=st_mode)
    expected = pooling({"token_embeddings": tokens, "attention_mask": inputs["attention_mask"]})["sentence_embedding"]
    assert (out.pooled - expected).abs().max() < TOLERANCE


def test_sentence_transformer_encode_parity_with_normalize(tmp_path):
    """The whole sentence-transformers model (tokenizer, transformer, pooling, Normalize) against polymodal."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    checkpoint = st_checkpoint(tmp_path, "mean", normalize=True)
    out, _, encoder = polymodal_pooled(checkpoint)
    assert encoder.normalize
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sentence_transformers.SentenceTransformer(str(checkpoint), device="cpu")
    expected = model.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    assert (out.pooled - expected.cpu()).abs().max() < TOLERANCE
    torch.testing.assert_close(out.pooled.norm(dim=-1), torch.ones(len(TEXTS)))


@pytest.mark.parametrize("torch_modes", [("mean", "max"), ("cls", "weightedmean", "lasttoken")])
def test_pool_tokens_with_left_padding_matches_sentence_transformers(torch_modes):
    st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
    tokens = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])  # left- and right-padded
    expected = st_modules.Pooling(8, pooling_mode=torch_modes)(
        {"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    assert (pool_tokens(tokens, mask, torch_modes) - expected).abs().max() < TOLERANCE


def test_new_style_pooling_mode_key_and_explicit_options_win(tmp_path):
    checkpoint = write_st_layout(save_tiny_bert(tmp_path / "v5"), {"pooling_mode": "cls"}, normalize=True)
    assert read_sentence_transformers(str(checkpoint)).modes == ("cls",)
    out, inputs, encoder = polymodal_pooled(checkpoint, pooling="mean", normalize=False)
    tokens = hf_hidden(checkpoint, inputs).last_hidden_state
    assert encoder.pooling_modes == ("mean",) and not encoder.normalize
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    assert (out.pooled - (tokens * mask).sum(1) / mask.sum(1)).abs().max() < TOLERANCE


def test_max_pooling_of_an_absent_sample_is_zero_not_nan(tmp_path):
    checkpoint = st_checkpoint(tmp_path, "max")
    cfg = ModalityConfig(kind="text", pretrained=str(checkpoint))
    processor, encoder = build_processor(cfg, "text"), build_encoder(cfg).eval()
    inputs = processor.collate([processor("one two"), processor.empty()])
    out = encoder(inputs, torch.tensor([True, False]))
    assert torch.isfinite(out.pooled).all() and torch.equal(out.pooled[1], torch.zeros(32))


def test_concatenated_modes_are_refused_naming_the_option(tmp_path):
    checkpoint = write_st_layout(save_tiny_bert(tmp_path / "multi"),
                                 {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True})
    with pytest.raises(ConfigError, match="options.pooling"):
        build_encoder(ModalityConfig(kind="text", pretrained=str(checkpoint)))
    encoder = build_encoder(ModalityConfig(kind="text", pretrained=str(checkpoint), options={"pooling": "cls"}))
    assert encoder.pooling_modes == ("cls",)


def test_unapplied_modules_are_named_in_a_warning(tmp_path):
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    checkpoint = write_st_layout(save_tiny_bert(tmp_path / "dense"), {"pooling_mode_mean_tokens": True},
                                 extra_modules=[dense])
    with pytest.warns(UserWarning, match="Dense"):
        build_encoder(ModalityConfig(kind="text", pretrained=str(checkpoint)))


def model_config(checkpoint) -> ModelConfig:
    return from_dict(ModelConfig, {
        "modalities": {"text": {"kind": "text", "pretrained": str(checkpoint)}},
        "fusion": {"dim": 8}, "head": {"labels": ["a", "b"], "dropout": 0.0},
    }, "model")


def test_saved_model_directory_keeps_the_declared_pooling(tmp_path):
    checkpoint = st_checkpoint(tmp_path, "mean", normalize=True)
    model = MultimodalModel(model_config(checkpoint)).eval()
    saved = model.save_pretrained(tmp_path / "saved")
    layout = read_sentence_transformers(str(saved / "hf" / "text"))
    assert layout is not None and layout.modes == ("mean",) and layout.normalize
    reloaded = MultimodalModel.from_pretrained(saved)
    processor = reloaded.processors["text"]
    inputs = processor.collate([processor(text) for text in TEXTS])
    present = torch.ones(len(TEXTS), dtype=torch.bool)
    with torch.no_grad():
        before, after = model.encoders["text"](inputs, present), reloaded.encoders["text"](inputs, present)
    assert reloaded.encoders["text"].pooling_modes == ("mean",) and reloaded.encoders["text"].normalize
    assert (before.pooled - after.pooled).abs().max() < TOLERANCE


def test_alignment_model_round_trip_keeps_the_declared_pooling(tmp_path):
    from polymodal.config import AlignmentConfig
    from polymodal.models import AlignmentModel

    checkpoint = st_checkpoint(tmp_path, "lasttoken")
    config = from_dict(AlignmentConfig, {
        "modalities": {"text": {"kind": "text", "pretrained": str(checkpoint)},
                       "caption": {"kind": "text", "processor": {"max_length": 8}}},
        "embed_dim": 8,
    }, "alignment")
    model = AlignmentModel(config).eval()
    reloaded = AlignmentModel.from_pretrained(model.save_pretrained(tmp_path / "aligned"))
    assert reloaded.encoders["text"].pooling_modes == ("lasttoken",)
    assert model.encoders["text"].cache_facts == reloaded.encoders["text"].cache_facts


def test_cache_facts_tell_declared_pooling_apart(tmp_path):
    """Feature caches hash cache_facts: the same config ("auto") resolving to another pooling is a cache miss."""
    mean = build_encoder(ModalityConfig(kind="text", pretrained=str(st_checkpoint(tmp_path, "mean", name="m"))))
    plain = build_encoder(ModalityConfig(kind="text", pretrained=str(save_tiny_bert(tmp_path / "p"))))
    assert mean.cache_facts != plain.cache_facts


def test_tokenizer_of_the_checkpoint_is_what_the_encoder_pools_over(tmp_path):
    checkpoint = st_checkpoint(tmp_path, "mean")
    _, inputs, _ = polymodal_pooled(checkpoint, texts=["one two"])
    expected = AutoTokenizer.from_pretrained(str(checkpoint))("one two")["input_ids"]
    assert inputs["input_ids"][0].tolist() == expected
