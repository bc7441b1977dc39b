"""EnsembleModel: saved classifiers of one label set combined into one model with MultimodalModel's contract.

``forward(batch)`` returns ModelOutput with ``logits`` [B, C] = log of the combined class probabilities, so
``softmax(logits)`` gives them back and the Predictor, ``polymodal eval`` and ``eval --compare`` treat an
ensemble like any classifier. Methods (``p_m`` [B, C]: member m's softmax probabilities, M members):

- ``mean``: ``Σ_m p_m / M`` (probability averaging).
- ``vote``: ``(votes + ½ · mean) / (M + ½)`` with ``votes[c]`` the number of members whose argmax is c: the
  argmax is the majority vote, a tie broken by the mean probability (the ½ can never overturn a vote).
- ``weighted``: ``Σ_m w_m p_m`` with ``w`` from each member's validation score (``weights_from``): accuracy
  ``w_m ∝ acc_m``, or log-loss ``w_m ∝ exp(−logloss_m)`` (the member's per-sample geometric-mean likelihood).
- ``stack``: softmax of a multinomial logistic regression over the members' log-probabilities [B, M*C]
  (Wolpert 1992, "Stacked generalization"), fitted on the validation split only (:mod:`.stacking`).

A saved ensemble is a directory: ``config.json`` (architecture "EnsembleModel", kind "ensemble", method, member
list), ``model.safetensors`` (``weights`` [M], and for stack ``stacker.weight`` [C, M*C], ``stacker.bias`` [C])
and each member saved in full under ``members/<i>/``, so it is self-contained. Loading reads JSON and
safetensors only: no pickle, and member code (``auto_map``) is never run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .. import __version__
from ..errors import PolymodalError
from ..files import atomic_save_safetensors, atomic_write_text
from ..heads import classification_loss_sum
from ..models.persistence import CONFIG_NAME, WEIGHTS_NAME, ModelDirectoryError, read_model_config
from ..objectives.accumulation import LossTerm
from ..types import Batch, ModelOutput

ENSEMBLE_ARCHITECTURE = "EnsembleModel"
METHODS = ("mean", "vote", "weighted", "stack")
MEMBERS_DIR = "members"
VOTE_TIE_WEIGHT = 0.5  # < 1: the mean probability breaks ties between vote counts, never overturns them


class EnsembleError(PolymodalError):
    """Members that cannot be combined (different label sets / inputs / tasks) or a broken ensemble directory."""


def combine_probabilities(member_probs: torch.Tensor, method: str, weights: torch.Tensor | None = None,
                          stacker: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Combine member probabilities [M, B, C] into ensemble probabilities [B, C] (rows sum to 1).

    ``weights`` [M] (weighted; normalised here), ``stacker`` (W [C, M*C], b [C]) for stack. The formulas are in
    the module docstring. Raises ValueError for an unknown method or a missing parameter.
    """
    if method == "mean":
        return member_probs.mean(0)
    if method == "vote":
        m, _, c = member_probs.shape
        votes = nn.functional.one_hot(member_probs.argmax(-1), c).to(member_probs.dtype).sum(0)
        return (votes + VOTE_TIE_WEIGHT * member_probs.mean(0)) / (m + VOTE_TIE_WEIGHT)
    if method == "weighted":
        if weights is None:
            raise ValueError("method 'weighted' needs member weights")
        w = weights.to(member_probs.dtype) / weights.sum()
        return (w[:, None, None] * member_probs).sum(0)
    if method == "stack":
        if stacker is None:
            raise ValueError("method 'stack' needs the stacker's weight and bias")
        from .stacking import stack_features

        weight, bias = stacker
        features = stack_features(member_probs.clamp_min(torch.finfo(member_probs.dtype).tiny).log())
        return (features @ weight.T.to(features.dtype) + bias.to(features.dtype)).softmax(-1)
    raise ValueError(f"unknown ensemble method {method!r}; expected one of {', '.join(METHODS)}")


class EnsembleModel(nn.Module):
    """Members (MultimodalModel classifiers with the same labels and inputs) + a combination method.

    Exposes what the Predictor and the eval report read from a MultimodalModel: ``config`` (member 0's
    ModelConfig: modalities and head labels), ``labels``, ``task`` ("multiclass"), ``modality_names``,
    ``processors``, ``data_config``.
    """

    is_ensemble = True
    task_name = "classification"  # the task it records (config.json "task"); "kind": "ensemble" says how to load

    def __init__(self, members: list[nn.Module], method: str, weights: torch.Tensor | None = None,
                 stacker: tuple[torch.Tensor, torch.Tensor] | None = None, info: dict[str, Any] | None = None):
        super().__init__()
        if method not in METHODS:
            raise EnsembleError(f"unknown ensemble method {method!r}; expected one of {', '.join(METHODS)}")
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.method = method
        first = members[0]
        self.config = first.config
        self.labels = list(first.labels)
        self.task = first.task
        self.modality_names = list(first.modality_names)
        self.data_config = getattr(first, "data_config", None)
        self.info = dict(info or {})  # member sources, validation scores: written to config.json
        count = len(members)
        self.register_buffer("weights", (weights if weights is not None else torch.ones(count)).double().clone())
        if method == "stack" and stacker is None:
            raise EnsembleError("method 'stack' needs a fitted stacker (weight, bias)")
        self.register_buffer("stacker_weight", stacker[0].double().clone() if stacker else torch.zeros(0))
        self.register_buffer("stacker_bias", stacker[1].double().clone() if stacker else torch.zeros(0))
        self._processors: dict[str, Any] | None = None

    @property
    def processors(self) -> dict[str, Any]:
        """Per-modality processors (every member takes the same inputs, so member 0's config builds them)."""
        if self._processors is None:
            from ..data import build_processors

            self._processors = build_processors(self.config.modalities)
        return self._processors

    def member_probabilities(self, batch: Batch) -> torch.Tensor:
        """Each member's softmax probabilities on ``batch``: [M, B, C] (float64)."""
        return torch.stack([member(batch).logits.double().softmax(-1) for member in self.members])

    def combine(self, member_probs: torch.Tensor) -> torch.Tensor:
        """Ensemble probabilities [B, C] from member probabilities [M, B, C]."""
        stacker = (self.stacker_weight, self.stacker_bias) if self.method == "stack" else None
        return combine_probabilities(member_probs, self.method, self.weights, stacker)

    def forward(self, batch: Batch) -> ModelOutput:
        probs = self.combine(self.member_probabilities(batch))
        logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log().float()
        loss, terms = None, {}
        if batch.labels is not None:
            total, count = classification_loss_sum(logits, batch.labels, self.task)
            terms = {"classification": LossTerm(total, float(count))}
            loss = total / max(count, 1)
        return ModelOutput(logits=logits, loss=loss, loss_terms=terms)

    # ------------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors + every member in full under members/<i>/."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        entries = []
        for index, member in enumerate(self.members):
            relative = f"{MEMBERS_DIR}/{index}"
            member.save_pretrained(directory / relative)
            entries.append({"path": relative, "fusion": member.config.fusion.name,
                            **(self.info.get("members") or [{}] * len(self.members))[index]})
        payload = {"polymodal_version": __version__, "task": self.task_name, "kind": "ensemble",
                   "method": self.method, "head_task": self.task, "labels": self.labels, "members": entries,
                   **{k: v for k, v in self.info.items() if k != "members"}}
        if self.data_config is not None:
            payload["data"] = self.data_config
        state = {"weights": self.weights.contiguous()}
        if self.method == "stack":
            state.update({"stacker.weight": self.stacker_weight.contiguous(),
                          "stacker.bias": self.stacker_bias.contiguous()})
        atomic_save_safetensors(state, directory / WEIGHTS_NAME)
        atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> EnsembleModel:
        """Rebuild a saved ensemble. Raises EnsembleError naming the file for a broken directory."""
        from ..models import MultimodalModel

        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        try:
            payload = read_model_config(directory)
        except ModelDirectoryError as err:
            raise EnsembleError(str(err)) from err
        method, entries = payload.get("method"), payload.get("members")
        if method not in METHODS or not isinstance(entries, list) or not entries:
            raise EnsembleError(f"{config_path}: an ensemble config needs 'method' (one of {', '.join(METHODS)}) "
                                "and a non-empty 'members' list; rebuild it with `polymodal ensemble`")
        members = []
        root = directory.resolve()
        for index, entry in enumerate(entries):
            member_dir = (directory / str((entry or {}).get("path", ""))).resolve()
            if root not in member_dir.parents:  # a member must live inside the ensemble directory
                raise EnsembleError(f"{config_path}: members[{index}].path {entry.get('path')!r} is not a folder "
                                    f"inside {directory}")
            members.append(MultimodalModel.from_pretrained(member_dir, map_location=map_location))
        state = load_file(str(directory / WEIGHTS_NAME), device=map_location)
        if method == "stack" and not {"stacker.weight", "stacker.bias"} <= state.keys():
            raise EnsembleError(f"{directory / WEIGHTS_NAME} lacks the stacker (stacker.weight / stacker.bias)")
        stacker = (state["stacker.weight"], state["stacker.bias"]) if method == "stack" else None
        info = {k: v for k, v in payload.items()
                if k not in ("polymodal_version", "architecture", "kind", "method", "task", "head_task", "labels",
                             "members", "data")}
        info["members"] = [{k: v for k, v in e.items() if k not in ("path", "fusion")} for e in entries]
        model = cls(members, method, state.get("weights"), stacker, info)
        if payload.get("data") is not None:
            model.data_config = payload["data"]
        model.eval()
        return model


__all__ = ["ENSEMBLE_ARCHITECTURE", "METHODS", "EnsembleError", "EnsembleModel", "combine_probabilities"]
