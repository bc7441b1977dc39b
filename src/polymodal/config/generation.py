"""The sections of the generation tasks (``captioning``, ``vqa``, ``transcription``, ``chat``): the
vision/audio-language model (``model``) and the decoding options (``generate``). Plain dataclasses, read by
:mod:`.run`; ``generation.VisionLanguageModel`` is built from them by ``tasks.generation``. ::

    task: vqa
    model:
      modalities:
        image: {encoder: {kind: image}, connector: mlp}        # encoder: a ModalityConfig (processor too)
        audio: {encoder: {kind: audio}, connector: resampler, connector_options: {num_tokens: 8}}
      decoder: {preset: tiny-llama}                            # or {pretrained: hub-name-or-directory}
      tokenizer: {vocab_size: 512}                             # trained on the training texts (preset only)
      stage: 2                                                 # 1: connectors only (LLaVA stage 1)
      lora: {r: 8, alpha: 16}                                  # stage 2 through LoRA (omit: full fine-tuning)
    generate: {max_new_tokens: 16, num_beams: 1}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .parse import ConfigError, from_dict
from .sections import ModalityConfig
from .values import bounds

GENERATION_TASKS = ("captioning", "vqa", "transcription", "chat")


@dataclass
class AttachmentConfig:
    """One attachment modality (``image``, ``audio``, or any name): encoder → connector → placeholder.

    placeholder:       the prompt token that each attachment replaces (default ``<{name}>``); one token
    connector:         a ``CONNECTORS`` name (``mlp``, ``resampler``); options in ``connector_options``
    encoder:           a polymodal encoder config (it also picks the processor; rebuilt on load); None = the
                       caller supplies the module (the tasks default it to the tiny preset of kind ``name``)
    encoder_dim:       D_enc of the encoder's tokens; 0 = read the encoder's ``output_dim``
    freeze_encoder:    no gradients into the encoder (LLaVA keeps the vision tower frozen in both stages)
    """

    placeholder: str = ""
    connector: str = "mlp"
    connector_options: dict[str, Any] = field(default_factory=dict)
    encoder: ModalityConfig | None = None
    encoder_dim: int = field(default=0, metadata=bounds(ge=0, note="0 = the encoder's output_dim"))
    freeze_encoder: bool = True


@dataclass
class DecoderConfig:
    """The causal LM: ``pretrained`` (hub name or directory of any ``AutoModelForCausalLM``) or, when None, the tiny
    ``preset`` (``decoders.DECODER_PRESETS``) with ``options`` overriding its config values."""

    pretrained: str | None = None
    revision: str | None = None
    preset: str = "tiny-llama"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class VLMConfig:
    """modalities: attachment name → AttachmentConfig; decoder; use_chat_template: format prompts with the
    tokenizer's chat template (False: ``bos + prompt + answer + eos``, for captioning-style models)."""

    modalities: dict[str, AttachmentConfig] = field(default_factory=dict)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    use_chat_template: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str = "vlm") -> VLMConfig:
        config = from_dict(cls, data, prefix)
        check_attachments(config.modalities, prefix)
        return config


def check_attachments(modalities: dict[str, AttachmentConfig], prefix: str) -> None:
    """Fill default placeholders (``<name>``); ConfigError when two modalities share one."""
    for name, attachment in modalities.items():
        if not attachment.placeholder:
            attachment.placeholder = f"<{name}>"
        if attachment.encoder_dim < 0:
            raise ConfigError(f"{prefix}.modalities.{name}.encoder_dim must be ≥ 0, got {attachment.encoder_dim}")
    placeholders = [a.placeholder for a in modalities.values()]
    if len(set(placeholders)) != len(placeholders):
        raise ConfigError(f"{prefix}.modalities: two modalities share a placeholder ({placeholders}); give each its own")


@dataclass
class TokenizerConfig:
    """The byte-level BPE trained on the training texts for a preset decoder (``decoders.train_tokenizer``);
    ignored with a pretrained decoder (its own tokenizer is used)."""

    vocab_size: int = field(default=512, metadata=bounds(ge=300, note="256 bytes + special tokens + merges"))
    min_frequency: int = field(default=1, metadata=bounds(ge=1))


@dataclass
class LoraSection:
    """LoRA on the decoder in stage 2 (PEFT; Hu et al. 2021, arXiv:2106.09685); merged into the weights when the
    model is saved."""

    r: int = field(default=8, metadata=bounds(ge=1))
    alpha: int = field(default=16, metadata=bounds(ge=1))
    dropout: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    target_modules: list[str] | str = "all-linear"


@dataclass
class GenerationModelConfig(VLMConfig):
    """The ``model`` section of the generation tasks: the VLMConfig + how to train it.

    tokenizer:  the tokenizer trained for a preset decoder
    stage:      LLaVA's stages (arXiv:2304.08485 §4.2): 1 = only the connectors train (encoders and decoder
                frozen); 2 = connectors + decoder (fully, or through ``lora``)
    lora:       None = full fine-tuning of the decoder in stage 2
    init_from:  a saved model directory of a generation task to start from (stage 1 → stage 2 runs)
    """

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    stage: Literal[1, 2] = 2
    lora: LoraSection | None = None
    init_from: str | None = None

    def vlm_config(self) -> VLMConfig:
        """The part the model itself records (what ``VisionLanguageModel`` is built from)."""
        return VLMConfig(modalities=dict(self.modalities), decoder=self.decoder,
                         use_chat_template=self.use_chat_template)


@dataclass
class GenerateConfig:
    """Decoding options (Hugging Face ``generate``), used for validation, test metrics and saved with the model as
    the defaults of ``polymodal generate`` / ``Predictor.generate``.

    validate_samples:  rows of the val split decoded each epoch for the cheap generation metric (0 = none)
    eval_samples:      rows of the test split decoded for the test metrics (None = every row)
    bootstrap:         resamples of the test metrics' bootstrap CIs (percentile, 95%)
    """

    max_new_tokens: int = field(default=32, metadata=bounds(ge=1))
    num_beams: int = field(default=1, metadata=bounds(ge=1))
    do_sample: bool = False
    temperature: float = field(default=1.0, metadata=bounds(gt=0))
    top_k: int = field(default=50, metadata=bounds(ge=0))
    top_p: float = field(default=1.0, metadata=bounds(gt=0, le=1))
    repetition_penalty: float = field(default=1.0, metadata=bounds(gt=0))
    stop_strings: list[str] = field(default_factory=list)
    validate_samples: int = field(default=64, metadata=bounds(ge=0, note="0 = no generation metric per epoch"))
    eval_samples: int | None = field(default=None, metadata=bounds(ge=1))
    bootstrap: int = field(default=1000, metadata=bounds(ge=0, note="0 = no confidence intervals"))
    meteor: bool = True  # captioning test metrics: METEOR too when Java + pycocoevalcap are there (starts a JVM)

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``VisionLanguageModel.generate`` (sampling options only when sampling)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                                  "do_sample": self.do_sample, "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        if self.stop_strings:
            kwargs["stop_strings"] = list(self.stop_strings)
        return kwargs


# The attachments a task's model gets when its config names none.
DEFAULT_ATTACHMENTS = {"captioning": ("image",), "vqa": ("image",), "transcription": ("audio",),
                       "chat": ("image", "audio")}


def check_generation_model(config: Any) -> None:
    """Run after parsing a generation task's config: the task's default attachments when ``model.modalities`` is
    empty, the tiny encoder preset of kind ``name`` for an ``image`` / ``audio`` / ``text`` attachment without
    ``encoder``, default placeholders; ConfigError for LoRA with stage 1 and for a ``finetune`` section that sets
    more than the feature cache (``cache_features``, ``cache_dir``)."""
    model: GenerationModelConfig = config.model
    if not model.modalities:
        model.modalities = {name: AttachmentConfig() for name in DEFAULT_ATTACHMENTS.get(config.task, ("image",))}
    for name, attachment in model.modalities.items():
        if attachment.encoder is None and attachment.encoder_dim == 0:
            if name not in ("image", "audio", "text"):
                raise ConfigError(f"model.modalities.{name}.encoder: give the encoder of attachment {name!r}, e.g. "
                                  "{kind: image}")
            attachment.encoder = ModalityConfig(kind=name)
    check_attachments(model.modalities, "model")
    if model.stage == 1 and model.lora is not None:
        raise ConfigError("model.lora: LoRA trains the decoder, which stage 1 freezes; set model.stage: 2 or drop "
                          "model.lora")
    if config.finetune is not None:
        import dataclasses

        from .finetune import FinetuneConfig, parse_finetune_config

        # Only the feature-cache keys apply: what trains is model.stage / model.lora / freeze_encoder.
        cache_keys = ("cache_features", "cache_dir")
        given = parse_finetune_config(config.finetune)
        other = [f.name for f in dataclasses.fields(FinetuneConfig)
                 if f.name not in cache_keys and getattr(given, f.name) != getattr(FinetuneConfig(), f.name)]
        if other:
            raise ConfigError(f"finetune.{other[0]}: task {config.task!r} is trained in stages; use model.stage "
                              "(1 = connectors only, 2 = + decoder) and model.lora instead (the finetune section "
                              "of a generation task takes only cache_features and cache_dir)")


__all__ = ["DEFAULT_ATTACHMENTS", "GENERATION_TASKS", "AttachmentConfig", "DecoderConfig", "GenerateConfig", "GenerationModelConfig",
           "LoraSection", "TokenizerConfig", "VLMConfig", "check_attachments", "check_generation_model"]
