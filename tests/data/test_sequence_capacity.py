"""A text processor never emits more tokens than its encoder takes: the limit comes from the encoder (tokenizer
model_max_length, config max_position_embeddings, CLIP context_length, text_transformer max_positions); an
unset max_length is min(64, limit) so long texts are truncated, and an explicit larger one is a ConfigError naming
the key when the model is built."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, DebertaV2Config, RobertaConfig

from polymodal.config import ConfigError, ModalityConfig, ModelConfig, from_dict
from polymodal.data import build_processor
from polymodal.encoders import build_encoder
from polymodal.encoders.capacity import position_capacity, resolve_max_length
from polymodal.inference import Predictor
from polymodal.models import MultimodalModel

WORDS = "the a cat dog sat on mat red blue green".split()
LONG_TEXT = " ".join(["the red cat sat on the blue mat"] * 4)  # 34 tokens with [CLS] / [SEP]


def tiny_bert(directory, positions: int = 16, tokenizer_limit: int | None = 16):
    """BERT with ``positions`` position embeddings; tokenizer saved with ``tokenizer_limit`` (None: no limit)."""
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    kwargs = {} if tokenizer_limit is None else {"model_max_length": tokenizer_limit}
    BertTokenizerFast(str(vocab), do_lower_case=True, **kwargs).save_pretrained(str(directory))
    BertModel(BertConfig(vocab_size=15, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=positions)).save_pretrained(str(directory))
    return directory


def text_model(modality: dict) -> MultimodalModel:
    return MultimodalModel(from_dict(ModelConfig, {
        "modalities": {"text": modality}, "fusion": {"dim": 8}, "head": {"labels": ["a", "b"], "dropout": 0.0},
    }, "model"))


@pytest.mark.parametrize(("positions", "tokenizer_limit", "expected"), [
    (16, 16, 16),     # the case tokenizer-overflow: both say 16
    (16, None, 16),   # tokenizer without a limit: the position table decides
    (24, 12, 12),     # the tokenizer is stricter than the table
    (128, None, 64),  # roomy checkpoint: the default 64 stays
])
def test_hf_text_default_length_is_capped_and_long_text_predicts(tmp_path, positions, tokenizer_limit, expected):
    checkpoint = tiny_bert(tmp_path / "bert", positions, tokenizer_limit)
    model = text_model({"kind": "text", "pretrained": str(checkpoint)})
    processor = model.processors["text"]
    assert processor.max_length == expected
    assert processor(LONG_TEXT)["input_ids"].shape == (min(expected, 34),)
    result = Predictor(model).predict(text=LONG_TEXT)
    assert result.label in ("a", "b") and abs(sum(result.probabilities.values()) - 1) < 1e-6


def test_hf_text_explicit_length_above_the_table_fails_at_build_naming_the_key(tmp_path):
    checkpoint = tiny_bert(tmp_path / "bert", 16, None)
    with pytest.raises(ConfigError, match=r"model\.modalities\.text\.processor\.max_length: 32 .* at most 16"):
        text_model({"kind": "text", "pretrained": str(checkpoint), "processor": {"max_length": 32}})


def test_hf_text_explicit_length_above_the_tokenizer_limit_fails_when_the_processor_is_built(tmp_path):
    checkpoint = tiny_bert(tmp_path / "bert", 24, 12)
    cfg = ModalityConfig(kind="text", pretrained=str(checkpoint), processor={"max_length": 20})
    with pytest.raises(ConfigError, match=r"processor\.max_length: 20 .*model_max_length"):
        build_processor(cfg, "text")
    assert build_processor(ModalityConfig(kind="text", pretrained=str(checkpoint),
                                          processor={"max_length": 12}), "text").max_length == 12


def test_text_transformer_max_positions_caps_the_builtin_processor():
    model = text_model({"kind": "text", "encoder": "text_transformer", "options": {"max_positions": 8}})
    processor = model.processors["text"]
    assert processor.max_length == 8
    assert processor(LONG_TEXT)["input_ids"].shape == (8,)
    assert Predictor(model).predict(text=LONG_TEXT).label in ("a", "b")
    with pytest.raises(ConfigError, match=r"processor\.max_length: 16 .*max_positions"):
        text_model({"kind": "text", "options": {"max_positions": 8}, "processor": {"max_length": 16}})
    assert text_model({"kind": "text"}).processors["text"].max_length == 64  # default preset: 512 positions


def test_clip_text_context_length_caps_the_processor():
    import polymodal.encoders  # noqa: F401  (registers clip_text)

    tiny = ModalityConfig(kind="text", encoder="clip_text", options={"preset": "tiny"})
    assert build_processor(tiny, "text").max_length == 16
    with pytest.raises(ConfigError, match=r"processor\.max_length: 100 .*at most 77"):
        build_encoder(ModalityConfig(kind="text", encoder="clip_text", processor={"max_length": 100}))
    with pytest.raises(ConfigError, match=r"processor\.max_length: 100 .*77"):
        build_processor(ModalityConfig(kind="text", encoder="clip_text", processor={"max_length": 100}), "text")
    encoder = build_encoder(tiny, name="text").eval()
    processor = build_processor(tiny, "text")
    inputs = processor.collate([processor(LONG_TEXT)])
    assert inputs["input_ids"].shape[1] == 16
    inputs["input_ids"] = inputs["input_ids"] % 100  # the tiny preset's vocabulary
    assert encoder(inputs, torch.tensor([True])).pooled.shape == (1, encoder.output_dim)


def test_hf_clip_text_tower_limit_is_its_max_position_embeddings():
    from hf_fixtures import tiny_hf_model_dir

    directory = str(tiny_hf_model_dir("clip"))  # text tower: 32 positions
    encoder = build_encoder(ModalityConfig(kind="text", pretrained=directory))
    assert encoder.max_tokens == 32
    with pytest.raises(ConfigError, match=r"text\.processor\.max_length: 64 .*at most 32"):
        build_encoder(ModalityConfig(kind="text", pretrained=directory, processor={"max_length": 64}), name="text")


def test_position_capacity_of_known_layouts():
    assert position_capacity(BertConfig(max_position_embeddings=512)) == 512
    assert position_capacity(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # fairseq offset
    assert position_capacity(DebertaV2Config(position_biased_input=False)) is None  # relative positions only


def test_resolve_max_length_rules():
    limits = [(16, "the table"), (None, ""), (10**30, "no limit")]
    assert resolve_max_length(None, limits, "k") == 16
    assert resolve_max_length(None, [(None, "")], "k") == 64
    assert resolve_max_length(12, limits, "k") == 12
    with pytest.raises(ConfigError, match=r"^k: 17 tokens asked, but the encoder takes at most 16 \(the table\)"):
        resolve_max_length(17, limits, "k")


def test_saved_model_reloads_with_the_same_capped_length(tmp_path):
    checkpoint = tiny_bert(tmp_path / "bert", 16, None)
    model = text_model({"kind": "text", "pretrained": str(checkpoint)})
    reloaded = MultimodalModel.from_pretrained(model.save_pretrained(tmp_path / "saved"))
    assert reloaded.processors["text"].max_length == 16
    assert Predictor(reloaded).predict(text=LONG_TEXT).label in ("a", "b")
