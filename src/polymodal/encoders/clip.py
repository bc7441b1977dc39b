"""The native CLIP towers as polymodal encoders: ``clip_vision`` and ``clip_text`` (registry ENCODERS).

Registered when ``polymodal.encoders`` is imported, so ``encoder: clip_vision`` works in any config and
``polymodal list encoders`` shows both. ``preset:`` names an architecture file under
``polymodal/presets/clip/`` (``polymodal list presets``); ``pretrained:`` loads Hugging Face CLIP weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import ENCODERS
from ..types import ModalityOutput
from .base import Encoder
from .clip_convert import from_hf_clip
from .clip_towers import CLIPModelNative, CLIPNativeConfig, CLIPTextTower, CLIPVisionTower, clip_preset_names


def _tower_config(preset: str, pretrained: str | None, load_weights: bool, overrides: dict):
    """A (config, CLIPModelNative | None) pair: pretrained HF CLIP weights when asked, else the preset."""
    if pretrained is not None and load_weights:
        model = from_hf_clip(pretrained)
        return model.config, model
    return CLIPNativeConfig.from_preset(preset, **overrides), None  # PresetError names the available ones


class _CLIPTowerEncoder(Encoder):
    def _finish(self, config: CLIPNativeConfig, model: CLIPModelNative | None, project: bool, width: int,
                projection: str) -> None:
        self.config = config
        self.output_dim = config.embed_dim if project else width
        self.projection = nn.Linear(width, config.embed_dim, bias=False) if project else None
        if model is not None and project:  # keep the checkpoint's own projection
            self.projection.load_state_dict(getattr(model, projection).state_dict())

    def _project(self, x: Tensor) -> Tensor:
        return x if self.projection is None else self.projection(x)

    def _output(self, tokens: Tensor, mask: Tensor, pooled: Tensor, present: Tensor) -> ModalityOutput:
        mask = mask & present.unsqueeze(1)
        pooled = self._project(pooled) * present.unsqueeze(1).to(pooled.dtype)
        return ModalityOutput(tokens=self._project(tokens), mask=mask, pooled=pooled, present=present)


@ENCODERS.register("clip_vision", "CLIP ViT image tower (native, fast); HF CLIP weights via pretrained=")
class CLIPVisionEncoder(_CLIPTowerEncoder):
    """inputs {"pixel_values": [B, C, H, W]} → tokens [B, 1 + P, D] (ln_post), pooled = CLS token [B, D].

    ``project=True`` applies CLIP's visual projection to tokens and pooled (D = embed_dim): the pooled output
    is then exactly CLIP's image embedding. Other keyword options override the preset's config fields.
    """

    kind = "image"

    def __init__(self, preset: str = "vit-b-32", pretrained: str | None = None, project: bool = False,
                 gradient_checkpointing: bool = False, load_weights: bool = True, image_size: int | None = None,
                 in_channels: int | None = None, **config_overrides):
        super().__init__()
        # image_size / in_channels are named so build_encoder fills them from the image processor (as for the
        # other image presets): the tower then always matches the pixel_values the processor makes.
        shape = {key: value for key, value in (("image_size", image_size), ("num_channels", in_channels))
                 if value is not None}
        config, model = _tower_config(preset, pretrained, load_weights, {**shape, **config_overrides})
        for key, value in shape.items():
            if getattr(config, key) != value:  # a checkpoint's own shape wins; say so instead of failing later
                raise ValueError(f"clip_vision: {pretrained} expects {key}={getattr(config, key)}, got {value} "
                                 f"(set the image processor to match)")
        self.tower = model.visual if model is not None else CLIPVisionTower(config)
        self.tower.transformer.gradient_checkpointing = gradient_checkpointing
        self._finish(config, model, project, config.vision_width, "visual_projection")

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tokens = self.tower(inputs["pixel_values"])
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def forward(self, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        tokens, mask = self.forward_features(inputs)
        return self._output(tokens, mask, tokens[:, 0], present)


@ENCODERS.register("clip_text", "CLIP causal text tower (native, fast); HF CLIP weights via pretrained=")
class CLIPTextEncoder(_CLIPTowerEncoder):
    """inputs {"input_ids": [B, L], "attention_mask": [B, L]} → tokens [B, L, D] (ln_final), pooled at EOT."""

    kind = "text"

    @classmethod
    def token_capacity(cls, options: dict) -> tuple[int | None, str]:
        """(context_length, source) of the tower ``options`` build, without building it: the text processor's
        length never exceeds it (encoders/capacity.py)."""
        if options.get("context_length") is not None:
            return int(options["context_length"]), "encoder option context_length of clip_text"
        if options.get("pretrained") is not None and options.get("load_weights", True):
            from .capacity import hf_text_capacity

            return hf_text_capacity(str(options["pretrained"])), f"context length of {options['pretrained']}"
        preset = options.get("preset", "vit-b-32")
        if preset not in clip_preset_names():
            return None, ""
        return CLIPNativeConfig.from_preset(preset).context_length, f"context_length of the clip_text preset {preset!r}"

    def __init__(self, preset: str = "vit-b-32", pretrained: str | None = None, project: bool = False,
                 gradient_checkpointing: bool = False, load_weights: bool = True, **config_overrides):
        super().__init__()
        config, model = _tower_config(preset, pretrained, load_weights, config_overrides)
        self.max_tokens = config.context_length  # the text processor never emits more (encoders/capacity.py)
        self.max_tokens_source = "context_length of clip_text"
        self.tower = model.text if model is not None else CLIPTextTower(config)
        self.tower.transformer.gradient_checkpointing = gradient_checkpointing
        self._finish(config, model, project, config.text_width, "text_projection")

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        tokens = self.tower(input_ids, attention_mask)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return tokens, mask

    def forward(self, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        tokens, mask = self.forward_features(inputs)
        eot = self.tower.eot_index(inputs["input_ids"])
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), eot]
        return self._output(tokens, mask, pooled, present)
