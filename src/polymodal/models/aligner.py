"""AlignmentModel: one encoder + projection head per modality into a shared, L2-normalised embedding space,
trained with a weighted sum of objectives (clip, siglip, itm, mlm) over modality pairs (CLIP / ALBEF / ImageBind).

    config = from_dict(AlignmentConfig, {"modalities": {"image": {"kind": "image"}, "text": {"kind": "text"}},
                                         "objectives": [{"name": "clip"}]})
    model = AlignmentModel(config)
    out = model(batch)            # AlignmentOutput(loss, losses, embeddings, logits)
    out.loss.backward()
    image_emb = model.encode(batch, "image")   # [B, E], unit norm (zeros where the sample lacks the modality)

With ≥ 3 modalities every pair (or the configured ``pairs``) contributes, each over the samples that have
both modalities (``Batch.present``). The total loss is Σ_objective weight · mean over the pairs it applied to.
A saved directory holds config.json + model.safetensors (+ hf/<modality>/ for Hugging Face encoders).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import AlignmentConfig, ConfigError, ModalityConfig, ObjectiveConfig, from_dict
from ..objectives import OBJECTIVES, ModalitySpec, ObjectiveSetup, PairInputs
from ..objectives.accumulation import LossTerm, combine, term_from_mean
from ..objectives.distributed import world_info
from ..objectives.masked_lm import PREPARED_KEYS
from ..peft import is_adapter_dir
from ..peft.adapters import attach_adapter, read_adapter
from ..types import Batch, ModalityOutput
from .base import ModalityModelMixin
from .persistence import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ModelDirectoryError,
    read_model_config,
    rebuild_saved_model,
    resolve_saved_paths,
    save_hf_artifacts,
    write_model_dir,
)

TASK = "alignment"  # the task a saved aligner records (config.json "task")
__all__ = ["TASK", "AlignmentConfig", "AlignmentModel", "AlignmentOutput", "ObjectiveConfig", "load_alignment_adapter"]


@dataclass
class AlignmentOutput:
    """loss: weighted total; losses: per "objective/a-b" (detached-free, for logging);
    embeddings: per modality [B, E] normalised (zeros for absent samples);
    logits: per "a-b" pair, the scaled similarity matrix [n, n] over the samples that have both;
    loss_terms: per "objective/a-b", the loss as a sum over its items + the item count (objectives.accumulation),
    which the Trainer uses to weight accumulated micro-batches by their share of the optimizer step."""

    loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    embeddings: dict[str, Tensor] = field(default_factory=dict)
    logits: dict[str, Tensor] = field(default_factory=dict)
    loss_terms: dict[str, LossTerm] = field(default_factory=dict)


def build_projection(in_dim: int, embed_dim: int, kind: str, hidden: int | None) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, embed_dim, bias=False)  # CLIP: no bias before normalisation
    if kind == "mlp":
        hidden = hidden or max(in_dim, embed_dim)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))
    raise ConfigError(f"projection: {kind!r} is not one of ['linear', 'mlp']")


def resolve_pairs(config: AlignmentConfig) -> list[tuple[str, str]]:
    names = list(config.modalities)
    if config.pairs is None:
        return list(itertools.combinations(names, 2))
    pairs = []
    for i, pair in enumerate(config.pairs):
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ConfigError(f"pairs[{i}]: expected two different modality names, got {pair}")
        for name in pair:
            if name not in config.modalities:
                raise ConfigError(f"pairs[{i}]: unknown modality {name!r}; modalities are {names}")
        pairs.append((pair[0], pair[1]))
    return pairs


def _text_facts(name: str, mcfg: ModalityConfig) -> dict[str, Any]:
    """vocab size / mask / pad / special ids of a text modality, from its processor (MLM needs them).

    HF tokenizers give mask_token_id and all_special_ids. The built-in tokenizers have no mask token, but their
    unk id (3) is never produced by tokenisation, so it is reserved as the mask token.
    """
    from ..data.processors import build_processor

    processor = build_processor(mcfg, name)
    tokenizer = getattr(processor, "tokenizer", None)
    facts: dict[str, Any] = {"vocab_size": getattr(processor, "vocab_size", None),
                             "pad_token_id": getattr(processor, "pad_token_id", None)}
    if tokenizer is not None:
        facts["mask_token_id"] = tokenizer.mask_token_id
        facts["special_token_ids"] = tuple(tokenizer.all_special_ids)
    else:
        from ..data import text as builtin_text

        facts["mask_token_id"] = builtin_text.UNK_ID
        facts["special_token_ids"] = (builtin_text.PAD_ID, builtin_text.CLS_ID, builtin_text.SEP_ID)
    return facts


def _check_logit_scale(init_scale: float, config: AlignmentConfig) -> None:
    """The initial log-scale must lie within its bound: above it the first projection would silently move it."""
    cap = config.logit_scale_max
    if not math.isfinite(cap):
        raise ConfigError(f"logit_scale_max: must be a finite log-scale (CLIP uses ln 100 = 4.6052), got {cap}")
    if not math.isfinite(init_scale) or init_scale > cap:
        source = "init_logit_scale" if config.init_logit_scale is not None else "init_logit_scale (its default)"
        raise ConfigError(
            f"{source}: {init_scale!r} is above logit_scale_max {cap:.6g} (a cosine multiplier of "
            f"{math.exp(min(init_scale, 700.0)):.7g} > {math.exp(cap):.7g}); the logit scale is kept within the cap "
            "after every optimizer step, so set init_logit_scale <= logit_scale_max (log-space, e.g. ln(1/0.07) "
            "= 2.659) or raise logit_scale_max"
        )


def _rows_of(inputs: dict[str, Tensor] | None, rows: Tensor) -> dict[str, Tensor]:
    """The processor inputs of ``rows`` ({} for a modality given only as encoder outputs, e.g. from a cache)."""
    return {k: v[rows] for k, v in (inputs or {}).items()}


def _select_rows(out: ModalityOutput, index: Tensor) -> ModalityOutput:
    return ModalityOutput(tokens=out.tokens[index], mask=out.mask[index], pooled=out.pooled[index],
                          present=out.present[index])


class AlignmentModel(ModalityModelMixin, nn.Module):
    task_name = TASK  # the task this model belongs to (polymodal.tasks), recorded when saved
    # A feature cache hands forward_encoded the whole batch (labels, presence, the inputs objectives read).
    forward_encoded_reads_batch = True
    # Validation's instance-level retrieval groups rows by their processed inputs (metrics.alignment): a cached
    # run validates on raw batches (the cached encoders still do not run).
    validates_on_inputs = True

    def __init__(self, config: AlignmentConfig, load_pretrained_weights: bool = True):
        super().__init__()
        from ..encoders import build_encoder  # local import: encoders import heavy HF modules lazily

        if len(config.modalities) < 2:
            raise ConfigError(f"modalities: alignment needs at least two modalities, got {list(config.modalities)}")
        if not config.objectives:
            raise ConfigError("objectives: name at least one objective (clip, siglip, itm, mlm)")
        self.config = config
        self.modality_names = list(config.modalities)
        self.pairs = resolve_pairs(config)
        self.encoders = nn.ModuleDict(
            {name: build_encoder(mcfg, load_weights=load_pretrained_weights, name=name) for name, mcfg in config.modalities.items()}
        )
        for name, mcfg in config.modalities.items():
            if mcfg.freeze:
                self.encoders[name].freeze()
        self.projections = nn.ModuleDict({
            name: build_projection(enc.output_dim, config.embed_dim, config.projection, config.projection_hidden)
            for name, enc in self.encoders.items()
        })
        names = [obj.name for obj in config.objectives]
        uses_siglip = "siglip" in names
        init_scale = config.init_logit_scale
        if init_scale is None:
            init_scale = math.log(10.0) if uses_siglip else math.log(1 / 0.07)
        _check_logit_scale(float(init_scale), config)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_scale)))
        learn_bias = uses_siglip if config.learn_bias is None else config.learn_bias
        self.logit_bias = nn.Parameter(torch.tensor(float(config.init_logit_bias))) if learn_bias else None
        setup = ObjectiveSetup(embed_dim=config.embed_dim, modalities=self._specs(names), pairs=self.pairs)
        self.objectives = nn.ModuleList()
        self.objective_names: list[str] = []
        self.objective_weights: list[float] = []
        for i, obj in enumerate(config.objectives):
            try:
                self.objectives.append(OBJECTIVES.build(obj.name, setup=setup, **obj.options))
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"objectives[{i}] ({obj.name}): {err}") from err
            self.objective_names.append(obj.name if obj.name not in self.objective_names else f"{obj.name}{i}")
            self.objective_weights.append(float(obj.weight))
        self._processors: dict[str, Any] | None = None
        # Zero-shot classes of the model ({"classnames": [...], "templates": {modality: [...]}}), set by the
        # alignment recipe and saved in config.json, so `polymodal predict` / Predictor label an image or audio
        # input with the class names and prompts the model was evaluated with.
        self.zeroshot: dict[str, Any] | None = None
        # The finetune section applied by peft.apply_finetune (plain dict), saved so from_pretrained rebuilds
        # injected LoRA / prompts before loading the state dict; the directory it was loaded from.
        self.finetune: dict[str, Any] | None = None
        self.pretrained_dir: str | None = None

    def _specs(self, objective_names: list[str]) -> dict[str, ModalitySpec]:
        specs = {}
        for name, mcfg in self.config.modalities.items():
            facts = _text_facts(name, mcfg) if mcfg.kind == "text" and "mlm" in objective_names else {}
            specs[name] = ModalitySpec(name=name, kind=mcfg.kind, token_dim=self.encoders[name].output_dim, **facts)
        return specs

    # ------------------------------------------------------------------------------------------ encoding

    def scale(self) -> Tensor:
        """exp(logit_scale), the multiplier of cosine similarities (scalar, differentiable everywhere).

        Its cap exp(logit_scale_max) (100, as in CLIP) is kept by :meth:`clamp_parameters` after each optimizer
        step, not by a clamp here: a clamp in the forward pass has zero gradient above the cap, so a temperature
        that got there would silently stop learning.
        """
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        """Project bounded parameters back into their bounds; the Trainer calls it after every optimizer step.

        logit_scale ≤ logit_scale_max (open_clip clamps after the step in the same way). The SigLIP logit bias
        is unbounded (as in big_vision), so it is left alone.
        """
        self.logit_scale.clamp_(max=self.config.logit_scale_max)

    def encode_modality(self, name: str, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        """Run one encoder: inputs (processor tensors) + present [B] → ModalityOutput (tokens [B, N, D])."""
        if any(key in inputs for key in PREPARED_KEYS):  # MLM's drawn masks travel with the text inputs
            inputs = {key: value for key, value in inputs.items() if key not in PREPARED_KEYS}
        return self.encoders[name](inputs, present)

    def embed(self, name: str, out: ModalityOutput) -> Tensor:
        """pooled [B, D] → unit-norm embedding [B, E]; rows of absent samples are zeros."""
        emb = F.normalize(self.projections[name](out.pooled), dim=-1)
        return emb * out.present.unsqueeze(-1).to(emb.dtype)

    def encode(self, batch: Batch, modality: str) -> Tensor:
        """Normalised embeddings [B, E] of one modality (zeros where ``batch.present[modality]`` is False)."""
        if modality not in self.encoders:
            raise KeyError(f"unknown modality {modality!r}; this model has {self.modality_names}")
        if modality not in batch.inputs:
            raise KeyError(f"batch has no {modality!r} inputs (it has {batch.modalities})")
        present = batch.present.get(modality)
        if present is None:
            present = torch.ones(len(batch), dtype=torch.bool, device=self.logit_scale.device)
        return self.embed(modality, self.encode_modality(modality, batch.inputs[modality], present))

    # ------------------------------------------------------------------------------------------ training

    def prepare_batch(self, batch: Batch) -> Batch:
        """``batch`` with every objective's random draws that decide its item count made (MLM masks).

        The Trainer calls it when it reads an optimizer step's micro-batches, before :meth:`loss_counts`;
        forward calls it too (a no-op on a prepared batch).
        """
        for objective in self.objectives:
            batch = objective.prepare(batch)
        return batch

    def _pair_rows(self, present: dict[str, Tensor]):
        """(a, b, rows [n]) for every configured pair the batch has, rows = samples holding both modalities."""
        distributed = world_info()[1] > 1
        for a, b in self.pairs:
            if a not in present or b not in present:
                continue
            rows = torch.nonzero(present[a] & present[b]).squeeze(1)
            # Under torch.distributed a rank with no rows still joins the collectives of the contrastive losses.
            if rows.numel() == 0 and not distributed:
                continue
            yield a, b, rows

    def loss_counts(self, batch: Batch, modalities: list[str] | None = None) -> dict[str, float]:
        """Items per loss term ("objective/a-b") of a prepared batch (:meth:`prepare_batch`), without running it.

        Samples for clip / siglip, scored pairs for itm, masked tokens for mlm. The Trainer sums these over an
        optimizer step's micro-batches and weighs each micro-batch's losses by its share (objectives.accumulation).
        ``modalities``: those the batch provides (default: the ones with inputs; a feature-cache batch provides
        cached modalities without inputs, training.feature_cache).
        """
        groups = batch.labels if batch.labels is not None and batch.labels.dim() == 1 else None
        names = modalities if modalities is not None else [n for n in self.modality_names if n in batch.inputs]
        present = {name: batch.present[name] for name in self.modality_names if name in names}
        counts: dict[str, float] = {}
        for a, b, rows in self._pair_rows(present):
            empty = torch.empty(int(rows.numel()), 0)  # count() reads only the row count, groups and inputs
            pair = PairInputs(a=a, b=b, emb_a=empty, emb_b=empty, logit_scale=self.logit_scale.detach(),
                              inputs_a=_rows_of(batch.inputs.get(a), rows), inputs_b=_rows_of(batch.inputs.get(b), rows),
                              group_ids=None if groups is None else groups[rows])
            for i, objective in enumerate(self.objectives):
                count = objective.count(pair)
                if count is not None:
                    counts[f"{self.objective_names[i]}/{a}-{b}"] = float(count)
        return counts

    def forward(self, batch: Batch) -> AlignmentOutput:
        """Batch → AlignmentOutput: :meth:`encode_raw` then :meth:`forward_encoded` (the loss is part of the
        output: the objectives carry trained layers and the logit scale, tasks/alignment.py)."""
        batch = self.prepare_batch(batch)
        return self.forward_encoded(self.encode_raw(batch), batch)

    def encode_raw(self, batch: Batch) -> dict[str, ModalityOutput]:
        """Encoder outputs (tokens [B, N, D_enc], pooled [B, D_enc]) of every model modality with inputs in
        ``batch``, before projection — what a feature cache stores (training.feature_cache)."""
        return {name: self.encode_modality(name, batch.inputs[name], batch.present[name])
                for name in self.modality_names if name in batch.inputs}

    def forward_encoded(self, raw_outputs: dict[str, ModalityOutput], batch: Batch) -> AlignmentOutput:
        """projection → normalised embeddings → objectives, from encoder outputs (live or cached).

        ``raw_outputs``: per modality the encoder's ModalityOutput (keys: the modalities the batch provides, ≥ 2);
        ``batch``: its labels (positives by class) and the processor inputs the objectives read (MLM re-encodes
        its text from them: :meth:`cache_blockers` says which modalities must therefore stay live). Raises
        ValueError when fewer than two of the model's modalities are given.
        """
        batch = self.prepare_batch(batch)
        outs = {name: raw_outputs[name] for name in self.modality_names if name in raw_outputs}
        if len(outs) < 2:
            raise ValueError(f"batch has {list(outs)}; alignment needs two of the model's modalities {self.modality_names}")
        embeddings = {name: self.embed(name, out) for name, out in outs.items()}
        scale = self.scale()
        groups = batch.labels if batch.labels is not None and batch.labels.dim() == 1 else None
        losses: dict[str, Tensor] = {}
        terms: dict[str, LossTerm] = {}
        logits: dict[str, Tensor] = {}
        present = {name: out.present for name, out in outs.items()}
        for a, b, rows in self._pair_rows(present):
            pair = PairInputs(
                a=a, b=b, emb_a=embeddings[a][rows], emb_b=embeddings[b][rows], logit_scale=scale,
                logit_bias=self.logit_bias, out_a=_select_rows(outs[a], rows), out_b=_select_rows(outs[b], rows),
                inputs_a=_rows_of(batch.inputs.get(a), rows), inputs_b=_rows_of(batch.inputs.get(b), rows),
                group_ids=None if groups is None else groups[rows], encode=self.encode_modality,
            )
            similarity = scale * pair.emb_a @ pair.emb_b.T
            logits[f"{a}-{b}"] = similarity if self.logit_bias is None else similarity + self.logit_bias
            for i, objective in enumerate(self.objectives):
                value = objective(pair)
                if value is None:
                    continue
                key = f"{self.objective_names[i]}/{a}-{b}"
                losses[key] = value
                terms[key] = term_from_mean(value, objective.count(pair), self.objective_weights[i])
        # Σ_objective weight · mean over the pairs it applied to; the zero term keeps a graph when none did.
        total = (self.logit_scale * 0.0).to(next(iter(embeddings.values())).dtype)
        if terms:
            total = total + combine(terms)
        return AlignmentOutput(loss=total, losses=losses, embeddings=embeddings, logits=logits, loss_terms=terms)

    # ------------------------------------------------------------------------------------------ feature cache

    def cache_blockers(self, modality: str) -> str | None:
        """Why ``modality``'s encoder outputs cannot come from a feature cache, or None when they can: an
        objective that re-encodes that modality's raw inputs (MLM re-runs the text encoder on masked ids)."""
        for name, objective in zip(self.objective_names, self.objectives):
            if modality in objective.raw_input_modalities():
                return (f"objective {name!r} re-encodes the raw {modality!r} inputs (it cannot read cached "
                        "encoder outputs)")
        return None

    def cache_needs_tokens(self) -> bool:
        """True when an objective reads token outputs [n, N, D] (itm, mlm): a cache must then keep tokens, not only
        pooled vectors (contrastive objectives read pooled embeddings alone)."""
        return any(objective.reads_tokens for objective in self.objectives)

    # ------------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json (task "alignment", + the zero-shot record) + model.safetensors (+ hf/<modality>/ for
        HF encoders) atomically (models/persistence.py)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(
            self.config, modalities=save_hf_artifacts(self.config.modalities, self.encoders, self.processors, directory)
        )
        return write_model_dir(directory, TASK, config, self.state_dict(),
                               {"zeroshot": self.zeroshot or None, "finetune": self.finetune or None})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu", *,
                        trust_remote_code: bool = False) -> AlignmentModel:
        """Rebuild a saved model. Code shipped in the directory never runs unless ``trust_remote_code=True`` is
        passed here: a ``trust_remote_code`` saved in config.json is ignored (``encoders.hf.load_time_trust``).

        Raises FileNotFoundError (no config.json / weights), ModelDirectoryError (another task's directory),
        ValueError (weights that do not match the config)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not weights_path.exists() and is_adapter_dir(directory):  # adapter-only save: base + trained weights
            return load_alignment_adapter(directory, map_location=map_location, trust_remote_code=trust_remote_code)
        for path in (config_path, weights_path):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: is {directory} a polymodal alignment model directory?")
        payload = read_model_config(directory)
        if payload["task"] != TASK:
            raise ModelDirectoryError(f"{config_path}: task is {payload['task']!r}, not {TASK!r}; load it with "
                                      "polymodal.tasks.load_model (or Predictor)")
        model = rebuild_saved_model(cls, from_dict(AlignmentConfig, payload["model"], "model"), payload, directory,
                                    map_location, trust_remote_code)
        # Models saved while the cap was a clamp in forward may hold a logit_scale above it; forward used the
        # capped value, so projecting reproduces their outputs.
        model.clamp_parameters()
        model.zeroshot = payload.get("zeroshot")
        return model



def load_alignment_adapter(directory: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                           map_location: str = "cpu", *, trust_remote_code: bool = False) -> AlignmentModel:
    """Rebuild an aligner from an adapter directory (``peft.save_adapter`` of a fine-tuned AlignmentModel): the base
    directory's model section (objectives etc. as recorded by the adapter), its weights, the recorded finetune
    strategy, then the adapter's trained weights (adapters, prompts, projections, logit scale, objective layers).

    ``base_dir`` overrides the recorded base location (its weights must match the recorded fingerprint). Raises
    ModelDirectoryError (an adapter of another task's model, or a base that is not an aligner), ValueError /
    FileNotFoundError from :func:`polymodal.peft.adapters.read_adapter`. Code shipped in the base directory runs
    only with ``trust_remote_code=True``.
    """
    from ..encoders.hf import load_time_trust  # local import, as for build_encoder

    files = read_adapter(directory, base_dir, map_location)
    task = files.payload.get("task", "classification")
    if task != TASK:
        raise ModelDirectoryError(f"{files.directory}: an adapter of a {task} model, not an aligner; load it with "
                                  "polymodal.tasks.load_model or that task's model class")
    base_payload = read_model_config(files.base)
    if base_payload["task"] != TASK:
        raise ModelDirectoryError(f"{files.directory}: its base {files.base} is a {base_payload['task']} model, "
                                  "not an aligner")
    section = dict(base_payload["model"], **{k: v for k, v in (files.payload.get("model") or {}).items()
                                             if k != "modalities"})
    config = from_dict(AlignmentConfig, section, "model")
    config.modalities = resolve_saved_paths(config.modalities, files.base)
    config.modalities = load_time_trust(config.modalities, files.base / CONFIG_NAME, trust_remote_code)
    model = attach_adapter(AlignmentModel(config, load_pretrained_weights=False), files)
    model.clamp_parameters()
    model.zeroshot = files.payload.get("zeroshot")
    return model
