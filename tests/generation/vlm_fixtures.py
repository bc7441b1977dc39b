"""Tiny pieces for vision-language model tests: a trained tokenizer, a patch encoder, a model builder, samples."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.decoders import train_tokenizer
from polymodal.generation import VisionLanguageModel, VLMConfig

CAPTIONS = ["a red square", "a blue circle", "two green lines", "one yellow dot"]
QUESTIONS = ["what is this?", "describe the picture.", "what colour is it?", "is it round?"]
TEXTS = CAPTIONS + QUESTIONS + ["yes", "no", "seven", "a handwritten seven", "what digit is this?"]
TINY_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 256}


def tiny_tokenizer():
    """A fresh byte-level BPE trained on TEXTS (fresh: tests may add tokens to it)."""
    return train_tokenizer(TEXTS, vocab_size=320)


class PatchEncoder(nn.Module):
    """pixel_values [K, 3, 8, 8] → tokens [K, 4, 16]: four 4×4 patches, each flattened and projected."""

    output_dim = 16

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, self.output_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = pixel_values.unfold(2, 4, 4).unfold(3, 4, 4)  # [K, 3, 2, 2, 4, 4]
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # [K, 4, 48]
        return self.proj(patches)


class FrameEncoder(nn.Module):
    """features [K, 6, T] + feature_mask [K, T] → (tokens [K, T, 12], mask): one token per audio frame."""

    output_dim = 12

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, self.output_dim)

    def forward(self, features: torch.Tensor, feature_mask: torch.Tensor):
        return self.proj(features.transpose(1, 2)), feature_mask.bool()


def make_model(connector: str = "mlp", audio: bool = False, connector_options: dict | None = None,
               use_chat_template: bool = True, seed: int = 0, **decoder_options) -> VisionLanguageModel:
    torch.manual_seed(seed)
    modalities = {"image": {"connector": connector, "connector_options": dict(connector_options or {})}}
    encoders: dict[str, nn.Module] = {"image": PatchEncoder()}
    if audio:
        modalities["audio"] = {"connector": "mlp"}
        encoders["audio"] = FrameEncoder()
    config = VLMConfig.from_dict({
        "modalities": modalities,
        "decoder": {"preset": "tiny-llama", "options": {**TINY_DECODER, **decoder_options}},
        "use_chat_template": use_chat_template,
    })
    model = VisionLanguageModel.build(config, tokenizer=tiny_tokenizer(), encoders=encoders)
    return model.eval()


def image(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.rand(3, 8, 8, generator=generator)}


def clip(seed: int, frames: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"features": torch.randn(6, frames, generator=generator), "feature_mask": torch.ones(frames)}
