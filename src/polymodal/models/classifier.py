"""MultimodalModel: one encoder per modality + a projection to a shared width + a fusion + a task head.

A saved model directory holds ``config.json`` + ``model.safetensors`` (+ ``hf/<modality>/`` with the
Hugging Face config and tokenizer / feature extractor of HF-backed encoders) and reloads with no other file
and no network access.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig, from_dict
from ..fusion import build_fusion  # importing the package registers every fusion
from ..heads import ClassificationHead, classification_objective
from ..peft import is_adapter_dir
from ..peft.adapters import attach_adapter, read_adapter
from ..types import Batch, FusedOutput, ModalityOutput, ModelOutput
from .base import ModalityModelMixin
from .persistence import (
    CONFIG_NAME,
    HF_DIR,  # noqa: F401 (re-exported)
    WEIGHTS_NAME,
    ModelDirectoryError,
    atomic_save_safetensors,  # noqa: F401 (re-exported)
    atomic_write_text,  # noqa: F401 (re-exported)
    read_model_config,
    rebuild_saved_model,
    resolve_saved_paths,
    save_hf_artifacts,
    write_model_dir,
)

TASK = "classification"  # the task a saved classifier records (config.json "task")


class MultimodalModel(ModalityModelMixin, nn.Module):
    task_name = TASK  # the task this model belongs to (polymodal.tasks), recorded when saved

    def __init__(self, config: ModelConfig, load_pretrained_weights: bool = True):
        super().__init__()
        from ..encoders import build_encoder  # local import: encoders import heavy HF modules lazily

        if not config.modalities:
            raise ValueError("model.modalities is empty: name at least one modality (e.g. image: {kind: image})")
        if not config.head.labels:
            raise ValueError("model.head.labels is empty: the classifier needs its label names")
        self.config = config
        self.modality_names = list(config.modalities)
        self.encoders = nn.ModuleDict(
            {name: build_encoder(mcfg, load_weights=load_pretrained_weights) for name, mcfg in config.modalities.items()}
        )
        for name, mcfg in config.modalities.items():
            if mcfg.freeze:
                self.encoders[name].freeze()
        dim = config.fusion.dim
        self.projections = nn.ModuleDict(
            {name: nn.Linear(encoder.output_dim, dim) for name, encoder in self.encoders.items()}
        )
        head_cfg = config.head
        self.task = head_cfg.task
        self.labels = list(head_cfg.labels)
        num_labels = len(self.labels)
        self.late = config.fusion.name == "late"
        if self.late:
            # Late fusion: one head per modality; logits are averaged over the modalities a sample has.
            self.fusion = None
            self.heads = nn.ModuleDict(
                {
                    name: ClassificationHead(dim, num_labels, head_cfg.task, head_cfg.hidden, head_cfg.dropout)
                    for name in self.modality_names
                }
            )
        else:
            self.fusion = build_fusion(config.fusion.name, self.modality_names, dim, **config.fusion.options)
            self.head = ClassificationHead(
                self.fusion.output_dim, num_labels, head_cfg.task, head_cfg.hidden, head_cfg.dropout
            )
        self._processors: dict[str, Any] | None = None
        # The data section the model was trained with (plain dict), saved alongside so `polymodal eval MODEL_DIR`
        # can default to the same data set's test split.
        self.data_config: dict[str, Any] | None = None
        # The finetune section applied by peft.apply_finetune (plain dict), saved in config.json so
        # from_pretrained rebuilds injected adapters / prompts before loading the state dict.
        self.finetune: dict[str, Any] | None = None
        # The directory from_pretrained loaded this model from (the base an adapter save refers to).
        self.pretrained_dir: str | None = None

    # ------------------------------------------------------------------------------------------ forward

    def encode(self, batch: Batch) -> dict[str, ModalityOutput]:
        """Encode every modality present in the batch and project it to the fusion width."""
        return self.project(self.encode_raw(batch))

    def encode_raw(self, batch: Batch) -> dict[str, ModalityOutput]:
        """Encoder outputs before projection (tokens [B, N, D_enc]) — what a feature cache stores."""
        return {
            name: self.encoders[name](batch.inputs[name], batch.present[name])
            for name in self.modality_names
            if name in batch.inputs
        }

    def project(self, raw_outputs: dict[str, ModalityOutput]) -> dict[str, ModalityOutput]:
        """Project encoder outputs [B, N, D_enc] to the fusion width [B, N, D]."""
        outputs = {}
        for name, raw in raw_outputs.items():
            proj = self.projections[name]
            present = raw.present.unsqueeze(-1).to(raw.pooled.dtype)
            outputs[name] = ModalityOutput(
                tokens=proj(raw.tokens), mask=raw.mask, pooled=proj(raw.pooled) * present, present=raw.present
            )
        return outputs

    def forward(self, batch: Batch) -> ModelOutput:
        """Batch → ModelOutput(logits [B, L], fused, modality_outputs). When the batch carries labels the output
        also holds the classification objective's loss (as a Hugging Face model does when given labels), so
        ``model(batch).loss.backward()`` works in a hand-written loop; the objective is the task's
        (``heads.classification_objective``, what ``tasks.classification`` trains with)."""
        return self.forward_encoded(self.encode_raw(batch), batch.labels)

    def forward_encoded(self, raw_outputs: dict[str, ModalityOutput], labels: torch.Tensor | None = None) -> ModelOutput:
        """projection → fusion → head from encoder outputs (e.g. cached ones: training/feature_cache.py)."""
        outputs = self.project(raw_outputs)
        if not outputs:
            raise ValueError(f"batch has none of the model's modalities {self.modality_names}")
        if self.late:
            logits, fused = self._late_logits(outputs), None
        else:
            fused = self.fusion(outputs)
            logits = self.head(fused.pooled)
        loss, terms = (None, {}) if labels is None else classification_objective(logits, labels, self.task)
        return ModelOutput(logits=logits, loss=loss, fused=fused, modality_outputs=outputs, loss_terms=terms)

    def _late_logits(self, outputs: dict[str, ModalityOutput]) -> torch.Tensor:
        total, count = 0.0, 0.0
        for name, out in outputs.items():
            weight = out.present.unsqueeze(-1).to(out.pooled.dtype)
            total = total + self.heads[name](out.pooled) * weight
            count = count + weight
        return total / torch.as_tensor(count).clamp_min(1.0)

    # ------------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json (task "classification") + model.safetensors (+ hf/<modality>/ for HF encoders)
        atomically (models/persistence.py)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(
            self.config, modalities=save_hf_artifacts(self.config.modalities, self.encoders, self.processors, directory)
        )
        return write_model_dir(directory, TASK, config, self.state_dict(),
                               {"data": self.data_config, "finetune": self.finetune or None})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu", *,
                        trust_remote_code: bool = False) -> MultimodalModel:
        """Rebuild a saved model. Code shipped in the directory (``auto_map`` in hf/<name>/*.json) never runs unless
        ``trust_remote_code=True`` is passed here: a ``trust_remote_code`` saved in config.json is ignored.

        Raises FileNotFoundError (no config.json / weights), ModelDirectoryError (the directory records another
        task), ValueError (weights that do not match the config)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not weights_path.exists() and is_adapter_dir(directory):  # adapter-only save: base + trained weights
            return load_adapter(directory, map_location=map_location, trust_remote_code=trust_remote_code)
        for path in (config_path, weights_path):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: is {directory} a polymodal model directory?")
        payload = read_model_config(directory)
        if payload["task"] != TASK or payload.get("kind") == "ensemble":
            kind = "an ensemble" if payload.get("kind") == "ensemble" else f"a {payload['task']} model"
            raise ModelDirectoryError(f"{config_path}: {kind}, not a single classifier; load it with "
                                      "polymodal.tasks.load_model (or Predictor)")
        model = rebuild_saved_model(cls, from_dict(ModelConfig, payload["model"], "model"), payload, directory,
                                    map_location, trust_remote_code)
        model.data_config = payload.get("data")
        return model



def load_adapter(directory: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                 map_location: str = "cpu", *, trust_remote_code: bool = False) -> MultimodalModel:
    """Rebuild base model + finetune strategy from an adapter directory (``peft.save_adapter``); load base, then
    adapter weights.

    ``base_dir`` overrides the recorded base location (e.g. after moving both directories); the base weights
    must still match the recorded fingerprint (ValueError otherwise; FileNotFoundError when the base is gone).
    Code shipped in the base directory runs only with ``trust_remote_code=True`` (a saved value is ignored).
    """
    from ..encoders.hf import load_time_trust  # local import, as for build_encoder

    files = read_adapter(directory, base_dir, map_location)
    if files.payload.get("task", TASK) != TASK:  # adapters saved before the task field are classifiers
        raise ModelDirectoryError(f"{files.directory}: an adapter of a {files.payload['task']} model, not a "
                                  "classifier; load it with polymodal.tasks.load_model or that task's model class")
    base_payload = read_model_config(files.base)
    config = from_dict(ModelConfig, dict(base_payload["model"], fusion=files.payload["fusion"],
                                         head=files.payload["head"]), "model")
    config.modalities = resolve_saved_paths(config.modalities, files.base)
    config.modalities = load_time_trust(config.modalities, files.base / CONFIG_NAME, trust_remote_code)
    return attach_adapter(MultimodalModel(config, load_pretrained_weights=False), files)


__all__ = ["TASK", "MultimodalModel", "FusedOutput", "load_adapter"]
