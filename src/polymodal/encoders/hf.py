"""Hugging Face encoders: any ``AutoModel`` checkpoint (hub name or local directory) as a polymodal Encoder.

Tested families: text BERT-style (``input_ids``/``attention_mask`` [B, L]); image ViT (``pixel_values``;
tokens = last_hidden_state) and CNNs such as ResNet / ConvNeXt (final map [B, C, h, w] flattened to h*w tokens);
audio AST (``input_values`` = fbank [B, T, mels]) and Wav2Vec2-style models (raw waveform ``input_values`` [B, S]
+ ``attention_mask``; the frame mask comes from the model's ``_get_feat_extract_output_lengths``).
Dual-tower checkpoints (CLIP, SigLIP, CLAP) use the tower of the modality's kind; encoder-decoder checkpoints
(T5, Whisper) use the encoder. Sentence-transformers checkpoints are pooled as their ``modules.json`` says
(``pooling.py``).

With ``load_weights=False`` only the architecture is built (AutoConfig + AutoModel.from_config): nothing is
downloaded and no weights are read, because a saved polymodal model supplies them from model.safetensors.

Code from a checkpoint never runs unless the caller asks: every transformers loader gets an explicit
``trust_remote_code`` (False unless the modality's ``options.trust_remote_code`` is true), and a saved model
directory cannot grant itself trust (``load_time_trust``): only the ``trust_remote_code`` argument of
``from_pretrained`` can.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, ModalityConfig
from ..registry import ENCODERS
from .base import Encoder
from .capacity import position_capacity
from .pooling import (
    POOLING_MODES,
    SentenceTransformersLayout,
    pool_tokens,
    read_sentence_transformers,
    write_sentence_transformers,
)

POOLINGS = ("auto", "pooler", *POOLING_MODES)
TOWER_ATTRIBUTES = {"image": "vision_model", "text": "text_model", "audio": "audio_model"}


# ---------------------------------------------------------------------------------------------- remote code


def remote_code_files(pretrained: str | Path) -> list[str]:
    """Code a local checkpoint directory asks transformers to import: the ``auto_map`` entries of its JSON files
    (config.json, tokenizer_config.json, preprocessor_config.json, processor_config.json, ...), as
    ``"<json file> → <module>.py"``. Empty for hub names and directories without ``auto_map``."""
    directory = Path(pretrained)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if not isinstance(auto_map, dict):
            continue
        references = []
        for value in auto_map.values():
            references.extend(value if isinstance(value, (list, tuple)) else [value])
        for reference in references:
            if isinstance(reference, str) and "." in reference:
                module = reference.split("--")[-1].rsplit(".", 1)[0]  # "repo--module.Class" → module
                entry = f"{path.name} → {module.replace('.', '/')}.py"
                if entry not in found:
                    found.append(entry)
    return found


def _refuse_local_remote_code(pretrained: str) -> None:
    """ConfigError when a local directory's config.json needs its own code (``auto_map`` and a ``model_type``
    transformers does not know): transformers would refuse too; this names the files and the way out."""
    path = Path(pretrained) / "config.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict) or not data.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    if data.get("model_type") in CONFIG_MAPPING:
        return  # a built-in architecture: transformers loads it and ignores auto_map when not trusted
    raise ConfigError(remote_code_message(pretrained))


def remote_code_message(pretrained: str) -> str:
    files = remote_code_files(pretrained)
    where = f" ({'; '.join(files)})" if files else ""
    return (
        f"{pretrained} needs code shipped with the checkpoint{where}, and polymodal runs such code only when the "
        f"person loading the model asks: a file inside a model directory cannot grant trust. Read that code, then "
        f"pass trust_remote_code=True to from_pretrained (or set options.trust_remote_code: true in your own "
        f"modality config)"
    )


def warn_remote_code(pretrained: str) -> None:
    """The warning shown when the caller enabled trust_remote_code: which files will run."""
    files = remote_code_files(pretrained)
    what = "; ".join(files) if files else f"any code the checkpoint {pretrained!r} ships (hub repository or directory)"
    warnings.warn(f"trust_remote_code=True for {pretrained}: transformers may import and run {what}", stacklevel=3)


def load_time_trust(modalities: dict[str, ModalityConfig], source: str | Path,
                    trust_remote_code: bool = False) -> dict[str, ModalityConfig]:
    """The modality configs of a saved model directory with trust decided by the loader, not by the directory.

    A saved ``options.trust_remote_code`` is ignored (warning naming ``source``); ``trust_remote_code=True``
    (the caller's argument) enables it for every Hugging Face modality.
    """
    from .factory import HF_ENCODER, resolve_encoder_name

    if not isinstance(trust_remote_code, bool):
        raise ConfigError(f"trust_remote_code must be True or False, got {trust_remote_code!r}")
    result = dict(modalities)
    for name, mcfg in modalities.items():
        saved = mcfg.options.get("trust_remote_code", False)
        is_hf = resolve_encoder_name(mcfg) == HF_ENCODER
        if trust_remote_code and is_hf:
            wanted = True
        elif saved is not False:
            warnings.warn(
                f"{source}: modalities.{name}.options.trust_remote_code is {saved!r} in the saved config; ignored "
                f"(a model directory cannot grant itself trust). Pass trust_remote_code=True when loading to run "
                f"the code it ships.",
                stacklevel=3,
            )
            wanted = False
        else:
            continue
        result[name] = dataclasses.replace(mcfg, options={**mcfg.options, "trust_remote_code": wanted})
    return result


# ---------------------------------------------------------------------------------------------- loading


def load_hf_backbone(
    pretrained: str,
    load_weights: bool = True,
    trust_remote_code: bool = False,
    revision: str | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """AutoModel from a checkpoint (``load_weights``) or from its config only (random weights).

    ``trust_remote_code`` is passed explicitly (None would let transformers prompt on a terminal); when False a
    local directory that needs its own code is refused with a ConfigError naming the files.
    """
    from transformers import AutoConfig, AutoModel

    if trust_remote_code:
        warn_remote_code(pretrained)
    else:
        _refuse_local_remote_code(pretrained)
    overrides = dict(config_overrides or {})
    try:
        if load_weights:
            return AutoModel.from_pretrained(
                pretrained, revision=revision, trust_remote_code=trust_remote_code, **overrides
            )
        config = AutoConfig.from_pretrained(
            pretrained, revision=revision, trust_remote_code=trust_remote_code, **overrides
        )
        return AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        if not trust_remote_code and "trust_remote_code" in str(err):
            raise ConfigError(remote_code_message(pretrained)) from err
        what = "model" if load_weights else "config"
        raise ConfigError(
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

    Options:

    - ``pooling`` (default "auto"): "auto" follows the checkpoint: a sentence-transformers ``modules.json`` with a
      Pooling module decides (e.g. mean for all-MiniLM-L6-v2), else the model's ``pooler_output`` when it has one
      (BERT's tanh over [CLS], ViT, AST), else the masked mean. Explicit: "pooler"; "cls" (first real token);
      "mean" (masked mean); "max"; "mean_sqrt_len" (sum / sqrt(length)); "weightedmean" (position-weighted
      mean); "lasttoken" (last real token). Definitions: sentence-transformers' Pooling module (``pooling.py``).
    - ``normalize`` (default None = follow the checkpoint: true when ``modules.json`` lists a Normalize module):
      L2-normalise the pooled vector [B, hidden].
    - ``hidden_layer`` (None = last_hidden_state, else an index into hidden_states, e.g. -2),
      ``gradient_checkpointing``, ``revision``, ``config_overrides`` (HF config attributes, e.g.
      {"hidden_dropout_prob": 0.0}).
    - ``trust_remote_code`` (default False): let transformers import code shipped with the checkpoint; a warning
      names the files. A saved model directory's own value is ignored on load (``load_time_trust``).

    ``max_tokens``: the text positions the backbone takes (its ``max_position_embeddings``; None for other kinds or
    no fixed table); ``build_encoder`` refuses a processor ``max_length`` above it (``capacity.py``).
    Raises ConfigError for a bad option or a checkpoint that cannot be loaded.
    """

    def __init__(
        self,
        kind: str,
        pretrained: str | None,
        load_weights: bool = True,
        pooling: str = "auto",
        normalize: bool | None = None,
        hidden_layer: int | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        config_overrides: dict[str, Any] | None = None,
    ):
        super().__init__()
        if not pretrained:
            raise ConfigError(
                "encoder 'hf' needs `pretrained`: a Hugging Face checkpoint name (e.g. bert-base-uncased) or a "
                "local directory written by save_pretrained"
            )
        if kind not in TOWER_ATTRIBUTES:
            raise ConfigError(f"encoder 'hf': unknown modality kind {kind!r}; expected image, audio or text")
        if pooling not in POOLINGS:
            raise ConfigError(f"encoder 'hf': options.pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        for key, value in (("trust_remote_code", trust_remote_code), ("normalize", normalize)):
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"encoder 'hf': options.{key} must be true or false, got {value!r}")
        self.kind, self.pretrained, self.pooling, self.hidden_layer = kind, str(pretrained), pooling, hidden_layer
        model = load_hf_backbone(pretrained, load_weights, trust_remote_code, revision, config_overrides)
        model = model.float()  # fp32 master weights; mixed precision is the trainer's job (autocast)
        if gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(f"encoder 'hf': {type(model).__name__} does not support gradient checkpointing")
            # transformers 5 renamed the method; 4.x only has the old name.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        # The full config (not the tower's) is what rebuilds the same architecture in save_hf_artifacts.
        self.hf_config = model.config
        self.backbone = select_tower(model, kind)
        tower_config = getattr(self.backbone, "config", model.config)
        self.output_dim = hidden_size(tower_config)
        self.main_input_name = getattr(self.backbone, "main_input_name", None) or model.main_input_name
        self._accepted = self._forward_parameters(self.backbone)
        self.max_tokens = position_capacity(tower_config) if kind == "text" else None
        self.max_tokens_source = f"max_position_embeddings of {self.pretrained}"
        # The checkpoint's declared pooling, read from JSON only (never imported), kept so that a saved
        # polymodal directory's hf/<name>/ declares the same pooling (save_hf_artifacts).
        try:
            self.layout: SentenceTransformersLayout | None = read_sentence_transformers(self.pretrained, revision)
        except ValueError as err:
            raise ConfigError(f"encoder 'hf' ({self.pretrained!r}): {err}") from err
        self.pooling_modes, self.normalize = self._resolve_pooling(pooling, normalize)

    def _resolve_pooling(self, pooling: str, normalize: bool | None) -> tuple[tuple[str, ...] | None, bool]:
        """(modes or None = pooler_output-or-mean at forward time, L2-normalise?)."""
        layout = self.layout
        if normalize is None:
            normalize = bool(layout and layout.normalize)
        if pooling == "auto" and layout is not None:
            if len(layout.modes) != 1:
                raise ConfigError(
                    f"encoder 'hf' ({self.pretrained!r}): its pooling concatenates {list(layout.modes)}, a vector "
                    f"of {len(layout.modes)}x the token width, but polymodal pools to the token width; set "
                    f"options.pooling to one of them"
                )
            return layout.modes, normalize
        if pooling in ("auto", "pooler"):
            return None, normalize
        return (pooling,), normalize

    @property
    def cache_facts(self) -> dict[str, Any]:
        """What decides the pooled output beyond config and weights (feature caches hash it): the resolved
        pooling can come from files in the checkpoint directory."""
        return {"pooling": list(self.pooling_modes or [self.pooling]), "normalize": self.normalize}

    @staticmethod
    def _forward_parameters(module: nn.Module) -> set[str]:
        params = inspect.signature(module.forward).parameters
        return {name for name, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    def save_hf_artifacts(self, directory: str | Path) -> Path:
        """Write the HF config (config.json) so the architecture rebuilds offline with load_weights=False, and the
        checkpoint's sentence-transformers pooling files (modules.json, 1_Pooling/, 2_Normalize/) when it had
        them, so the rebuilt encoder pools the same way."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf_config.save_pretrained(str(directory))
        if self.layout is not None:
            write_sentence_transformers(directory, self.layout.modes, self.layout.normalize, self.output_dim)
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

    def _pooled(self, outputs: Any, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.pooling_modes is not None:
            pooled = pool_tokens(tokens, mask, self.pooling_modes)
        else:
            pooler = getattr(outputs, "pooler_output", None) if self.hidden_layer is None else None
            if self.pooling == "pooler" and pooler is None:
                raise ConfigError(
                    f"encoder 'hf' ({self.pretrained!r}) returns no pooler_output; set options.pooling to 'mean'"
                )
            # "auto" without a declared pooling: the model's own pooler (ResNet's is [B, C, 1, 1]), else the mean
            pooled = pooler.flatten(1) if pooler is not None else pool_tokens(tokens, mask, ("mean",))
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tokens, mask, _ = self.forward_features_pooled(inputs)
        return tokens, mask
