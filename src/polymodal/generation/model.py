"""The vision/audio-language model: encoders → one connector per modality → a causal language model decoder.

Attachment tokens reach the decoder through ``inputs_embeds``: each placeholder (``<image>``, ``<audio>``) in the
prompt is replaced by its attachment's connector tokens (:mod:`.expand`). Training is teacher forcing with the
loss on answer tokens only; the output carries the loss as a SUM and a token COUNT so a trainer can normalise
over all tokens of an accumulated step (``objectives.accumulation``). Generation is Hugging Face ``generate``
on the expanded ``inputs_embeds`` (greedy, beam, sampling, repetition penalty, stop strings, KV cache,
streamers): no decoding loop is written here.

Staged training as in LLaVA (Liu et al., 2023, arXiv:2304.08485 §4.2; LLaVA-1.5 arXiv:2310.03744): stage 1 trains
only the connectors (``configure_stage(1)``), stage 2 the connectors and the decoder, fully or through LoRA
(``apply_lora`` then ``configure_stage(2)``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..connectors import Connector, ConnectorOutput, build_connector
from ..data.errors import DataError
from ..decoders import apply_lora, is_peft_model, merge_lora
from ..objectives.accumulation import LossTerm
from ..types import ModalityOutput
from .collate import GenerationBatch, GenerationCollator
from .config import VLMConfig
from .expand import count_answer_tokens, expand_placeholders, token_loss

ENCODED_TOKENS, ENCODED_MASK = "encoded_tokens", "encoded_mask"  # cached encoder outputs skip the encoder


@dataclass
class VLMOutput:
    """logits [B, L', V] over the expanded sequence; attention_mask / labels [B, L'];
    loss = loss_sum / num_tokens (mean over answer tokens; None without labels); loss_sum: Σ token losses;
    num_tokens: 0-d long; loss_terms: {"lm": LossTerm(loss_sum, num_tokens)} for ``objectives.accumulation``."""

    logits: Tensor
    attention_mask: Tensor
    labels: Tensor | None = None
    loss: Tensor | None = None
    loss_sum: Tensor | None = None
    num_tokens: Tensor | None = None
    loss_terms: dict[str, LossTerm] = field(default_factory=dict)


def _tokens_and_mask(output: Any, modality: str) -> tuple[Tensor, Tensor | None]:
    """Encoder output → (tokens [K, N, D], mask [K, N] | None)."""
    if isinstance(output, ModalityOutput):
        return output.tokens, output.mask
    if isinstance(output, Tensor) and output.dim() == 3:
        return output, None
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], Tensor):
        return output[0], output[1]
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden, None
    raise TypeError(f"encoder of {modality!r} returned {type(output).__name__}; expected a ModalityOutput, tokens "
                    f"[B, N, D], a (tokens, mask) pair or an object with last_hidden_state")


class VisionLanguageModel(nn.Module):
    """encoders (modality → nn.Module) → connectors (modality → Connector) → decoder (a ``PreTrainedModel`` causal LM).

    An encoder is any module producing tokens [K, N, D_enc] for K attachments: a polymodal ``Encoder`` (called
    ``encoder(inputs, present)``, returns ModalityOutput) or any other module, called ``encoder(**inputs)`` and
    returning tokens [K, N, D], a (tokens, mask) pair or an output with ``last_hidden_state``. Attachment inputs
    may instead carry cached encoder outputs, ``{"encoded_tokens": [K, N, D], "encoded_mask": [K, N]}``, which
    skip the encoder (the feature cache of frozen encoders, ``training.generation_cache``). Build with
    :meth:`build`; reload with :meth:`from_pretrained`.
    """

    # The task a saved directory records (``tasks.generation``): a plain model answers conversations; the task
    # that builds or loads one sets its own name (captioning, vqa, transcription, chat) on the instance.
    task_name = "chat"
    # The feature cache of this model is per attachment (training.generation_cache): cached samples carry
    # ``encoded_tokens`` attachment inputs; the classification cache (training.feature_cache) does not apply.
    caches_attachments = True

    def __init__(self, config: VLMConfig, decoder: nn.Module, tokenizer: Any, encoders: dict[str, nn.Module],
                 connectors: dict[str, Connector]):
        super().__init__()
        # Saved with the model ("generate" in config.json): the decoding defaults of generate / Predictor.
        self.generation_defaults: dict[str, Any] = {}
        # Save a merged copy when the decoder holds LoRA adapters (the Trainer saves best/ mid-training) instead of
        # refusing; off by default so a plain user is told to merge first.
        self.merge_lora_on_save = False
        missing = sorted(set(config.modalities) - set(connectors))
        if missing:
            raise ConfigError(f"vlm.modalities {missing} have no connector")
        self.config = config
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.encoders = nn.ModuleDict(encoders)
        self.connectors = nn.ModuleDict(connectors)
        self.placeholders = {name: cfg.placeholder for name, cfg in config.modalities.items()}
        self.placeholder_ids = GenerationCollator(tokenizer, self.placeholders).placeholder_ids
        self._frozen: set[str] = set()
        for name, cfg in config.modalities.items():
            if cfg.freeze_encoder and name in self.encoders:
                self._freeze(f"encoders.{name}")

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def build(cls, config: VLMConfig | dict, *, tokenizer: Any = None,
              encoders: dict[str, nn.Module] | None = None) -> VisionLanguageModel:
        """A model from its config. ``tokenizer``: required for a decoder preset (``decoders.train_tokenizer``);
        for a pretrained decoder, the checkpoint's own is loaded when None. ``encoders``: modules for modalities
        whose config has no ``encoder``. Raises ConfigError for a missing encoder / tokenizer or a bad config."""
        from ..decoders import build_tiny_decoder, load_causal_lm, prepare_tokenizer, resize_decoder

        config = config if isinstance(config, VLMConfig) else VLMConfig.from_dict(config)
        spec = config.decoder
        if spec.pretrained:
            if tokenizer is None:
                from ..data.text import load_tokenizer

                tokenizer = load_tokenizer(spec.pretrained, trust_remote_code=False, revision=spec.revision)
            decoder = load_causal_lm(spec.pretrained, revision=spec.revision, **spec.options)
        elif tokenizer is None:
            raise ConfigError("vlm.decoder: a preset decoder needs a tokenizer; train one on the training texts with "
                              "decoders.train_tokenizer(texts) and pass tokenizer=")
        else:
            decoder = build_tiny_decoder(tokenizer, spec.preset, **spec.options)
        prepare_tokenizer(tokenizer, [cfg.placeholder or f"<{n}>" for n, cfg in config.modalities.items()])
        resize_decoder(decoder, tokenizer)
        return cls.assemble(config, decoder, tokenizer, encoders)

    @classmethod
    def assemble(cls, config: VLMConfig, decoder: nn.Module, tokenizer: Any, encoders: dict[str, nn.Module] | None,
                 load_weights: bool = True) -> VisionLanguageModel:
        """Build encoders (from config where given) and connectors around a ready decoder + tokenizer."""
        built: dict[str, nn.Module] = {}
        connectors: dict[str, Connector] = {}
        lm_width = decoder.get_input_embeddings().embedding_dim
        for name, cfg in config.modalities.items():
            cfg.placeholder = cfg.placeholder or f"<{name}>"
            encoder = (encoders or {}).get(name)
            if encoder is None and cfg.encoder is not None:
                from ..encoders import build_encoder

                encoder = build_encoder(cfg.encoder, load_weights=load_weights, name=name)
            if encoder is None and cfg.encoder_dim <= 0:
                raise ConfigError(f"vlm.modalities.{name}: no encoder; set modalities.{name}.encoder or pass "
                                  f"encoders={{{name!r}: module}}")
            if encoder is not None:
                built[name] = encoder
            if cfg.encoder_dim <= 0:
                dim = getattr(encoder, "output_dim", None)
                if not isinstance(dim, int):
                    raise ConfigError(f"vlm.modalities.{name}.encoder_dim: the {type(encoder).__name__} encoder has "
                                      f"no integer output_dim; give its token width")
                cfg.encoder_dim = dim
            connectors[name] = build_connector(cfg.connector, cfg.encoder_dim, lm_width, **cfg.connector_options)
        return cls(config, decoder, tokenizer, built, connectors)

    # ------------------------------------------------------------------------------------------ trainability

    def _freeze(self, path: str) -> None:
        module = self.get_submodule(path)
        for param in module.parameters():
            param.requires_grad_(False)
        module.eval()
        self._frozen.add(path)

    def _unfreeze(self, path: str) -> None:
        module = self.get_submodule(path)
        for param in module.parameters():
            param.requires_grad_(True)
        self._frozen.discard(path)
        module.train(self.training)

    def train(self, mode: bool = True) -> VisionLanguageModel:
        super().train(mode)
        for path in self._frozen:  # frozen parts keep eval mode: no dropout, no BatchNorm statistics updates
            self.get_submodule(path).eval()
        return self

    def configure_stage(self, stage: int) -> VisionLanguageModel:
        """LLaVA's stages. 1: only connectors train (encoders and decoder frozen). 2: connectors and decoder train
        (every decoder weight, or only the LoRA weights after :meth:`apply_lora`); encoders stay as configured."""
        if stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (connectors only) or 2 (connectors + decoder), got {stage!r}")
        for name in self.connectors:
            self._unfreeze(f"connectors.{name}")
        if stage == 1:
            for name in self.encoders:
                self._freeze(f"encoders.{name}")
            self._freeze("decoder")
        elif is_peft_model(self.decoder):
            self._frozen.discard("decoder")
            for pname, param in self.decoder.named_parameters():  # PEFT's rule: only adapter weights train
                param.requires_grad_("lora_" in pname)
            self.decoder.train(self.training)
        else:
            self._unfreeze("decoder")
        return self

    def apply_lora(self, **options: Any) -> VisionLanguageModel:
        """Wrap the decoder in PEFT LoRA (``decoders.apply_lora`` options: r, alpha, dropout, target_modules)."""
        self._frozen.discard("decoder")
        self.decoder = apply_lora(self.decoder, **options)
        return self

    def merge_lora(self) -> VisionLanguageModel:
        """Fold LoRA weights into the decoder (W + BA·α/r); the model then saves like a plain one."""
        self.decoder = merge_lora(self.decoder)
        return self

    def cache_blockers(self, modality: str) -> str | None:
        """Why the encoder outputs of ``modality`` cannot be cached for training (None: they can): no encoder, an
        encoder that trains, or one that would run in training mode (dropout / BatchNorm) during training."""
        if modality not in self.encoders:
            return f"attachment {modality!r} has no encoder (its inputs are already encoder outputs)"
        encoder = self.encoders[modality]
        if any(p.requires_grad for p in encoder.parameters()):
            return (f"encoder {modality!r} trains (model.modalities.{modality}.freeze_encoder is false and "
                    "model.stage is 2): its outputs change every step")
        # model.train() keeps only registered frozen parts in eval mode; an encoder frozen by hand would go back to
        # training mode, and its dropout / BatchNorm would vary from epoch to epoch.
        stochastic = (nn.Dropout, nn.modules.batchnorm._BatchNorm)
        if f"encoders.{modality}" not in self._frozen and any(
                isinstance(m, stochastic) and getattr(m, "p", 1.0) != 0 for m in encoder.modules()):
            return (f"encoder {modality!r} has no trainable weight but runs in training mode (dropout / "
                    "BatchNorm vary); freeze it with freeze_encoder or model.stage 1")
        return None

    def parameter_counts(self) -> dict[str, int]:
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        return {"total": count(self.parameters()), "trainable": count(p for p in self.parameters() if p.requires_grad),
                "connectors": count(self.connectors.parameters()), "decoder": count(self.decoder.parameters()),
                "encoders": count(self.encoders.parameters())}

    # ------------------------------------------------------------------------------------------ forward

    def encode_attachments(self, modality: str, inputs: dict[str, Tensor]) -> ConnectorOutput:
        """K attachments' inputs → ConnectorOutput(tokens [K, M, D_lm], mask [K, M])."""
        if modality not in self.connectors:
            raise DataError(f"the batch has {modality!r} attachments but the model has no {modality!r} connector "
                            f"(modalities: {sorted(self.connectors)})")
        if ENCODED_TOKENS in inputs:
            tokens, mask = inputs[ENCODED_TOKENS], inputs.get(ENCODED_MASK)
        else:
            if modality not in self.encoders:
                raise DataError(f"{modality!r} attachments need an encoder or cached '{ENCODED_TOKENS}'")
            tokens, mask = self.encoder_outputs(modality, inputs)
        return self.connectors[modality](tokens, mask)

    def encoder_outputs(self, modality: str, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """K attachments' processed inputs {key: [K, ...]} → the encoder's (tokens [K, N, D_enc], mask [K, N] bool or
        None = every token real); what the feature cache stores. Without gradients when the encoder is frozen."""
        from ..encoders.base import Encoder

        encoder = self.encoders[modality]
        frozen = not any(p.requires_grad for p in encoder.parameters())
        with torch.no_grad() if frozen else nullcontext():  # a frozen encoder keeps no activations for backward
            if isinstance(encoder, Encoder):
                count = next(iter(inputs.values())).shape[0]
                device = next(iter(inputs.values())).device
                output = encoder(inputs, torch.ones(count, dtype=torch.bool, device=device))
            else:
                output = encoder(**inputs)
        return _tokens_and_mask(output, modality)

    def embed(self, batch: GenerationBatch, padding_side: str = "right"):
        """The decoder inputs of a batch (:class:`.expand.Expanded`), placeholders expanded."""
        text_embeds = self.decoder.get_input_embeddings()(batch.input_ids)
        features = {}
        for modality, inputs in batch.attachments.items():
            out = self.encode_attachments(modality, inputs)
            features[self.placeholder_ids[modality]] = ConnectorOutput(out.tokens.to(text_embeds.dtype), out.mask)
        for modality, token in self.placeholder_ids.items():  # placeholders without attachments must fail loudly
            if token not in features and bool((batch.input_ids[batch.attention_mask.bool()] == token).any()):
                raise DataError(f"the batch's text holds {self.placeholders[modality]} placeholders but no "
                                f"{modality} attachments")
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        expanded = expand_placeholders(batch.input_ids, batch.attention_mask, batch.labels, text_embeds, features,
                                       padding_side, batch.ids, pad_id)
        return expanded

    def check_length(self, length: int, new_tokens: int = 0) -> None:
        """DataError when ``length`` (expanded prompt) + ``new_tokens`` exceeds the decoder's position table,
        before the decoder fails with an index error (learned positions) or silently extrapolates."""
        config = getattr(self.decoder, "config", None)
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if isinstance(limit, int) and length + new_tokens > limit:
            grown = f" + {new_tokens} new tokens" if new_tokens else ""
            raise DataError(f"a sample is {length} tokens long after expanding attachments{grown}, more than the "
                            f"decoder's {limit} positions (max_position_embeddings); shorten the text, lower "
                            f"max_new_tokens or use fewer connector tokens (resampler num_tokens)")

    def as_batch(self, batch: GenerationBatch | Any) -> GenerationBatch:
        """A GenerationBatch as is; processed samples (``generation.data.SampleBatch``) tokenised for training."""
        samples = getattr(batch, "samples", None)
        if isinstance(batch, GenerationBatch) or samples is None:
            return batch
        return self.collator()(samples)

    def forward(self, batch: GenerationBatch) -> VLMOutput:
        """Teacher forcing. With labels: loss_sum (Σ CE over answer tokens), num_tokens and their ratio ``loss``.
        ``batch``: a GenerationBatch, or processed samples (SampleBatch) which are tokenised first."""
        batch = self.as_batch(batch)
        expanded = self.embed(batch, padding_side="right")
        self.check_length(expanded.inputs_embeds.shape[1])
        out = self.decoder(inputs_embeds=expanded.inputs_embeds, attention_mask=expanded.attention_mask,
                           position_ids=expanded.position_ids, use_cache=False)
        result = VLMOutput(logits=out.logits, attention_mask=expanded.attention_mask, labels=expanded.labels)
        if expanded.labels is not None:
            loss_sum, count = token_loss(out.logits, expanded.labels)
            result.loss_sum, result.num_tokens = loss_sum, count
            result.loss = loss_sum / count.clamp_min(1)
            result.loss_terms = {"lm": LossTerm(total=loss_sum, count=float(count))}
        return result

    def loss_counts(self, batch: GenerationBatch) -> dict[str, float]:
        """Answer tokens of a batch before running it (a trainer sums these over an accumulated step)."""
        batch = self.as_batch(batch)
        if batch.labels is None:
            return {"lm": 0.0}
        return {"lm": float(count_answer_tokens(batch.labels, batch.attention_mask))}

    # ------------------------------------------------------------------------------------------ generation

    def collator(self, for_generation: bool = False) -> GenerationCollator:
        return GenerationCollator(self.tokenizer, self.placeholders, for_generation=for_generation,
                                  use_chat_template=self.config.use_chat_template)

    def generate(self, batch: GenerationBatch, **kwargs: Any) -> Tensor:
        """New token ids [B, T] (prompt excluded; finished rows padded with pad_token_id) from Hugging Face
        ``generate`` on left-padded ``inputs_embeds``.

        kwargs go to ``generate``: max_new_tokens, do_sample, temperature, top_k, top_p, num_beams,
        repetition_penalty, stop_strings, streamer, use_cache (KV cache, default on), generation_config, ...
        pad / eos / bos ids default to the tokenizer's; the tokenizer is passed for ``stop_strings``.
        """
        expanded = self.embed(batch, padding_side="left")
        self.check_length(expanded.inputs_embeds.shape[1], int(kwargs.get("max_new_tokens") or 0))
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        if self.tokenizer.bos_token_id is not None:
            kwargs.setdefault("bos_token_id", self.tokenizer.bos_token_id)
        if kwargs.get("stop_strings"):
            kwargs.setdefault("tokenizer", self.tokenizer)
        prompt_length = expanded.input_ids.shape[1]
        with torch.no_grad():
            # input_ids ride along with inputs_embeds so that the repetition penalty also sees the prompt;
            # generate then returns prompt + new tokens, and only the new ones are ours to return
            output = self.decoder.generate(input_ids=expanded.input_ids, inputs_embeds=expanded.inputs_embeds,
                                           attention_mask=expanded.attention_mask, **kwargs)
        sequences = output if isinstance(output, Tensor) else output.sequences
        return sequences[:, prompt_length:]

    def decode(self, token_ids: Tensor, stop_strings: list[str] | str | None = None) -> list[str]:
        """Token ids [B, T] → texts without special tokens, each cut before its first stop string."""
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        texts = []
        for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True):
            for stop in stops:
                text = text.split(stop, 1)[0]
            texts.append(text.strip())
        return texts

    def generate_text(self, samples: list[dict[str, Any]], **kwargs: Any) -> list[str]:
        """Samples (``messages`` or ``prompt``, ``attachments``; see :mod:`.collate`) → generated texts."""
        batch = self.collator(for_generation=True)(samples)
        device = next(self.parameters()).device
        return self.decode(self.generate(batch.to(device), **kwargs), kwargs.get("stop_strings"))

    def stream(self, sample: dict[str, Any], timeout: float | None = 60.0, **kwargs: Any) -> Iterator[str]:
        """Yield text pieces as they are generated (one sample; ``TextIteratorStreamer`` with generate running in
        a thread). Errors inside generation are re-raised here, after the pieces already produced."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
        batch = self.collator(for_generation=True)([sample]).to(next(self.parameters()).device)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.generate(batch, streamer=streamer, **kwargs)
            except BaseException as err:  # noqa: BLE001 — handed to the consumer thread
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=run, name="polymodal-generate", daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failure:
            raise failure[0]

    # ------------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """config.json + model.safetensors + tokenizer/ (+ hf/<modality>/ for Hugging Face encoders)."""
        from .persistence import save_vlm

        return save_vlm(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, encoders: dict[str, nn.Module] | None = None,
                        map_location: str = "cpu") -> VisionLanguageModel:
        """Rebuild a saved model. ``encoders``: modules for modalities saved without an encoder config (their
        weights come from model.safetensors). Code shipped in the directory never runs."""
        from .persistence import load_vlm

        return load_vlm(cls, directory, encoders=encoders, map_location=map_location)
