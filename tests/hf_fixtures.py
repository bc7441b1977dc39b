"""Tiny randomly initialised Hugging Face models saved to a directory, for offline tests.

Each ``save_tiny_<family>(directory)`` writes a model with ``save_pretrained`` (hidden width 32 or less,
2 layers) plus its tokenizer / image processor / feature extractor where the family has one, and returns the
directory. ``tiny_hf_model_dir(family)`` does that once per test process into a temp dir and caches it.

Usage in a test (tests/ is on sys.path via tests/conftest.py)::

    from hf_fixtures import tiny_hf_model_dir
    cfg = ModalityConfig(kind="text", pretrained=str(tiny_hf_model_dir("bert")))
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

BERT_WORDS = "a an the one two three four five six seven eight nine zero digit handwritten spoken number of is".split()


def _seeded(directory: str | Path) -> Path:
    torch.manual_seed(0)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def save_tiny_bert(directory: str | Path) -> Path:
    """BertModel (hidden 32, 2 layers) + BertTokenizerFast built from a 24-entry vocab file."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = _seeded(directory)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS]
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    # positional: the argument is "vocab" in transformers 5 (vocab_file= is silently ignored there)
    BertTokenizerFast(str(vocab_file), do_lower_case=True).save_pretrained(str(directory))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(directory))
    return directory


def save_tiny_vit(directory: str | Path) -> Path:
    """ViTModel (32 px, patch 8 → 16 patches + CLS, hidden 32, 2 layers) + ViTImageProcessor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    directory = _seeded(directory)
    config = ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64,
    )
    ViTModel(config).save_pretrained(str(directory))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(directory))
    return directory


def save_tiny_resnet(directory: str | Path) -> Path:
    """ResNetModel (basic blocks, widths 8 → 16) + a 32 px image processor."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    directory = _seeded(directory)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(config).save_pretrained(str(directory))
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(str(directory))
    return directory


def save_tiny_convnext(directory: str | Path) -> Path:
    """ConvNextModel (2 stages, widths 8 → 16) + its image processor at 32 px."""
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    directory = _seeded(directory)
    config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    ConvNextModel(config).save_pretrained(str(directory))
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(str(directory))
    return directory


def save_tiny_ast(directory: str | Path) -> Path:
    """ASTModel (16 mel bins × 64 frames, hidden 32, 2 layers) + a matching ASTFeatureExtractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    directory = _seeded(directory)
    config = ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_mel_bins=16, max_length=64, patch_size=16, frequency_stride=8, time_stride=8,
    )
    ASTModel(config).save_pretrained(str(directory))
    ASTFeatureExtractor(num_mel_bins=16, max_length=64, sampling_rate=16000).save_pretrained(str(directory))
    return directory


def save_tiny_wav2vec2(directory: str | Path) -> Path:
    """Wav2Vec2Model (2 conv layers, total stride 20; hidden 32, 2 layers) + Wav2Vec2FeatureExtractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    directory = _seeded(directory)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
        mask_time_prob=0.0, vocab_size=8,
    )
    Wav2Vec2Model(config).save_pretrained(str(directory))
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(str(directory))
    return directory


def save_tiny_clip(directory: str | Path) -> Path:
    """CLIPModel with tiny text and vision towers (hidden 32, 2 layers, 32 px images)."""
    from transformers import CLIPConfig, CLIPModel

    directory = _seeded(directory)
    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 64, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(str(directory))
    return directory


TINY_HF_MODELS: dict[str, Callable[[str | Path], Path]] = {
    "bert": save_tiny_bert,
    "vit": save_tiny_vit,
    "resnet": save_tiny_resnet,
    "convnext": save_tiny_convnext,
    "ast": save_tiny_ast,
    "wav2vec2": save_tiny_wav2vec2,
    "clip": save_tiny_clip,
}
# The modality kind each family encodes (CLIP serves image and text; image listed).
TINY_HF_KINDS = {
    "bert": "text", "vit": "image", "resnet": "image", "convnext": "image",
    "ast": "audio", "wav2vec2": "audio", "clip": "image",
}


@cache
def _cache_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="polymodal-hf-fixtures-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@cache
def tiny_hf_model_dir(family: str) -> Path:
    """The directory of tiny model ``family`` (one of TINY_HF_MODELS), written once per process."""
    if family not in TINY_HF_MODELS:
        raise KeyError(f"unknown tiny HF model {family!r}; available: {sorted(TINY_HF_MODELS)}")
    return TINY_HF_MODELS[family](_cache_root() / family)
