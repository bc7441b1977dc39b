"""Hugging Face encoders: any ``AutoModel`` checkpoint (hub name or local directory) as a polymodal Encoder.

Tested families: text BERT-style (``input_ids``/``attention_mask`` [B, L]); image ViT (``pixel_values``;
tokens = last_hidden_state) and CNNs such as ResNet / ConvNeXt (final map [B, C, h, w] flattened to h*w tokens);
audio AST (``input_values`` = fbank [B, T, mels]) and Wav2Vec2-style models (raw waveform ``input_values`` [B, S]
+ ``attention_mask``; the frame mask comes from the model's ``_get_feat_extract_output_lengths``).
Dual-tower checkpoints (CLIP, SigLIP, CLAP) use the tower of the modality's kind; encoder-decoder checkpoints
(T5, Whisper) use the encoder.

With ``load_weights=False`` only the architecture is built (AutoConfig + AutoModel.from_config): nothing is
downloaded and no weights are read, because a saved polymodal model supplies them from model.safetensors.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import ENCODERS
from .base import Encoder, masked_mean

POOLINGS = ("auto", "pooler", "cls", "mean")
TOWER_ATTRIBUTES = {"image": "vision_model", "text": "text_model", "audio": "audio_model"}


def load_hf_backbone(
    pretrained: str,
    load_weights: bool = True,
    trust_remote_code: bool = False,
    revision: str | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """AutoModel from a checkpoint (``load_weights``) or from its config only (random weights)."""
    from transformers import AutoConfig, AutoModel

    overrides = dict(config_overrides or {})
    try:
        if load_weights:
            return AutoModel.from_pretrained(
                pretrained, revision=revision, trust_remote_code=trust_remote_code, **overrides
            )
        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code, **overrides)
        return AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        what = "model" if load_weights else "config"
        raise ValueError(
            f"cannot load the Hugging Face {what} {pretrained!r}: {err}. Give a hub checkpoint name (needs the "
            f"network or a cached copy) or a local directory written by save_pretrained."
        ) from err


def select_tower(model: nn.Module, kind: str) -> nn.Module:
    """The part of ``model`` that encodes ``kind``: a dual-tower's branch, an encoder-decoder's encoder."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    tower = getattr(model, TOWER_ATTRIBUTES[kind], None)
    return tower if isinstance(tower, nn.Module) else model


def hidden_size(config: Any) -> int:
    """Token width from an HF config: the last stage of a CNN (hidden_sizes), else hidden_size / d_model / dim."""
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    for attribute in ("hidden_size", "d_model", "dim"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the output width of {type(config).__name__}: no hidden_size/hidden_sizes/d_model")


@ENCODERS.register("hf")
class HFEncoder(Encoder):
    """Hugging Face AutoModel backbone for any kind. Tokens [B, N, hidden]; mask [B, N]; pooled [B, hidden].

    Options: ``pooling`` ("auto" = the model's pooler_output when it has one, else masked mean; "pooler";
    "cls" = first token; "mean"), ``hidden_layer`` (None = last_hidden_state, else an index into
    hidden_states, e.g. -2), ``gradient_checkpointing``, ``trust_remote_code``, ``revision``,
    ``config_overrides`` (HF config attributes, e.g. {"hidden_dropout_prob": 0.0}).
    """

    def __init__(
        self,
        kind: str,
        pretrained: str | None,
        load_weights: bool = True,
        pooling: str = "auto",
        hidden_layer: int | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        config_overrides: dict[str, Any] | None = None,
    ):
        super().__init__()
        if not pretrained:
            raise ValueError(
                "encoder 'hf' needs `pretrained`: a Hugging Face checkpoint name (e.g. bert-base-uncased) or a "
                "local directory written by save_pretrained"
            )
        if kind not in TOWER_ATTRIBUTES:
            raise ValueError(f"encoder 'hf': unknown modality kind {kind!r}; expected image, audio or text")
        if pooling not in POOLINGS:
            raise ValueError(f"encoder 'hf': pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        self.kind, self.pretrained, self.pooling, self.hidden_layer = kind, str(pretrained), pooling, hidden_layer
        model = load_hf_backbone(pretrained, load_weights, trust_remote_code, revision, config_overrides)
        model = model.float()  # fp32 master weights; mixed precision is the trainer's job (autocast)
        if gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(f"encoder 'hf': {type(model).__name__} does not support gradient checkpointing")
            # transformers 5 renamed the method; 4.x only has the old name.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        # The full config (not the tower's) is what rebuilds the same architecture in save_hf_artifacts.
        self.hf_config = model.config
        self.backbone = select_tower(model, kind)
        self.output_dim = hidden_size(getattr(self.backbone, "config", model.config))
        self.main_input_name = getattr(self.backbone, "main_input_name", None) or model.main_input_name
        self._accepted = self._forward_parameters(self.backbone)

    @staticmethod
    def _forward_parameters(module: nn.Module) -> set[str]:
        params = inspect.signature(module.forward).parameters
        return {name for name, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    def save_hf_artifacts(self, directory: str | Path) -> Path:
        """Write the HF config (config.json) so the architecture rebuilds offline with load_weights=False."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf_config.save_pretrained(str(directory))
        return directory

    # ------------------------------------------------------------------------------------------ forward

    def _model_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.main_input_name not in inputs:
            raise KeyError(
                f"encoder 'hf' ({type(self.backbone).__name__}, {self.pretrained!r}) expects "
                f"inputs[{self.main_input_name!r}]; got keys {sorted(inputs)}. Use the checkpoint's processor "
                f"(processor options of this modality) so the inputs match the model."
            )
        kwargs = {key: value for key, value in inputs.items() if key in self._accepted}
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None:
            # An absent sample has an all-zero mask; attending over nothing is 0/0 in softmax. Let such rows
            # attend everywhere (finite numbers); Encoder.forward masks them out anyway.
            empty = ~attention_mask.bool().any(-1, keepdim=True)
            kwargs["attention_mask"] = torch.where(empty, torch.ones_like(attention_mask), attention_mask)
        if self.hidden_layer is not None:
            kwargs["output_hidden_states"] = True
        return kwargs

    def _token_mask(self, inputs: dict[str, Tensor], num_tokens: int, batch: int, device: torch.device) -> Tensor:
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            return torch.ones(batch, num_tokens, dtype=torch.bool, device=device)
        if attention_mask.shape[-1] == num_tokens:  # one token per input position (text)
            return attention_mask.to(device=device, dtype=torch.bool)
        lengths_fn = getattr(self.backbone, "_get_feat_extract_output_lengths", None)
        if lengths_fn is None:  # unknown downsampling: cannot map the mask, treat every token as real
            return torch.ones(batch, num_tokens, dtype=torch.bool, device=device)
        lengths = lengths_fn(attention_mask.long().sum(-1)).to(device)  # waveform samples → frames
        return torch.arange(num_tokens, device=device)[None, :] < lengths[:, None]

    def forward_features_pooled(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        outputs = self.backbone(**self._model_inputs(inputs))
        if self.hidden_layer is not None:
            hidden = outputs.hidden_states[self.hidden_layer]
        else:
            hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        if hidden.dim() == 4:  # CNN feature map [B, C, h, w] → tokens [B, h*w, C]
            hidden = hidden.flatten(2).transpose(1, 2)
        if hidden.shape[-1] != self.output_dim:
            raise ValueError(
                f"encoder 'hf' ({self.pretrained!r}): tokens have width {hidden.shape[-1]} but the config says "
                f"{self.output_dim}"
            )
        mask = self._token_mask(inputs, hidden.shape[1], hidden.shape[0], hidden.device)
        return hidden, mask, self._pooled(outputs, hidden, mask)

    def _pooled(self, outputs: Any, tokens: Tensor, mask: Tensor) -> Tensor | None:
        pooler = getattr(outputs, "pooler_output", None) if self.hidden_layer is None else None
        if self.pooling == "pooler" and pooler is None:
            raise ValueError(f"encoder 'hf' ({self.pretrained!r}) returns no pooler_output; use pooling 'mean'")
        if self.pooling in ("auto", "pooler") and pooler is not None:
            return pooler.flatten(1)  # ResNet's pooler is [B, C, 1, 1]
        if self.pooling == "cls":
            return tokens[:, 0]
        return masked_mean(tokens, mask)

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tokens, mask, _ = self.forward_features_pooled(inputs)
        return tokens, mask
