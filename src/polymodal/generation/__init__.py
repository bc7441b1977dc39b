"""The generative half's model core: vision/audio-language models (LLaVA / BLIP-2 / nanoVLM family).

- :class:`VisionLanguageModel`: encoders → connectors (``polymodal.connectors``) → causal LM decoder
  (``polymodal.decoders``), attachments entering through ``inputs_embeds`` at placeholder positions;
- :class:`GenerationCollator` / :class:`GenerationBatch`: samples (conversations or prompt + answer, with
  attachments) → token ids, answer-only labels and batched attachment inputs;
- :func:`expand_placeholders`, :func:`token_loss`: the two pieces of maths, usable on their own.

Tasks (captioning, vqa, transcription, chat), metrics and CLI verbs build on these (docs/GENERATION.md).
"""

from __future__ import annotations

from .chat import IGNORE_INDEX, EncodedText, encode_messages, sample_messages
from .collate import GenerationBatch, GenerationCollator, stack_attachments
from .config import AttachmentConfig, DecoderConfig, VLMConfig
from .expand import Expanded, count_answer_tokens, expand_placeholders, token_loss
from .model import VisionLanguageModel, VLMOutput

__all__ = [
    "IGNORE_INDEX", "AttachmentConfig", "DecoderConfig", "EncodedText", "Expanded", "GenerationBatch",
    "GenerationCollator", "VLMConfig", "VLMOutput", "VisionLanguageModel", "count_answer_tokens",
    "encode_messages", "expand_placeholders", "sample_messages", "stack_attachments", "token_loss",
]
