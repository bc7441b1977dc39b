"""Zero-shot labels from an alignment model: the class names and prompt templates it was evaluated with.

An AlignmentModel has no classifier head. It labels an image or audio input the CLIP way (Radford et al. 2021,
"Learning Transferable Visual Models From Natural Language Supervision", section 3.1.4): each class name is put
into prompt templates ("a photo of a {}."), embedded by the text tower, the normalised prompt embeddings of a
class are averaged and renormalised (prompt ensembling), and the input's embedding is compared with every class
embedding by cosine similarity. Probabilities are ``softmax(scale · cos)``, with the model's learned temperature
``scale = exp(logit_scale)`` (CLIP's zero-shot logits).

Where the class names come from, first found wins: the caller (``Predictor(..., classnames=[...])``,
``polymodal predict --classes``); the ``zeroshot`` section saved in the model's config.json by the alignment recipe
(its ``zeroshot:`` config section, default: the labels of the training data, the words zero … nine for the
built-in spoken digits); for models saved before that section existed, ``class_names`` in the run's
metrics.json next to ``best/``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import PolymodalError


class PredictionError(PolymodalError, ValueError):
    """A request the model cannot answer (e.g. a text-only input to an alignment model); the message says what
    the model can do and which command to use instead."""


def _run_dir_zeroshot(model_dir: Path | None) -> dict[str, Any]:
    """Class names recorded by an older alignment run next to its best/ model (metrics.json ``class_names``)."""
    if model_dir is None:
        return {}
    metrics = Path(model_dir).parent / "metrics.json"
    try:
        names = json.loads(metrics.read_text()).get("class_names") if metrics.is_file() else None
    except (OSError, ValueError):
        return {}
    return {"classnames": list(names)} if names else {}


class ZeroShotClassifier:
    """Class names × templates → per-modality classifier weights [C, E], built lazily, and probabilities [B, C]."""

    def __init__(self, model: Any, classnames: Sequence[str] | None = None,
                 templates: Sequence[str] | dict[str, Sequence[str]] | None = None, model_dir: Path | None = None):
        self.model = model
        saved = getattr(model, "zeroshot", None) or _run_dir_zeroshot(model_dir)
        self.classnames = [str(c) for c in classnames] if classnames else list(saved.get("classnames") or [])
        self.templates = templates if templates else dict(saved.get("templates") or {})
        kinds = {name: model.config.modalities[name].kind for name in model.modality_names}
        self.text_modality = next((name for name, kind in kinds.items() if kind == "text"), None)
        self.query_modalities = [name for name, kind in kinds.items() if kind != "text"]
        self._weights: dict[str, Tensor] = {}

    def templates_for(self, modality: str) -> list[str]:
        from ..metrics.zeroshot import default_templates

        chosen = self.templates.get(modality) if isinstance(self.templates, dict) else self.templates
        return list(chosen) if chosen else default_templates(self.model.config.modalities[modality].kind)

    def weights(self, modality: str) -> Tensor:
        """Unit-norm class embeddings [C, E] for inputs of ``modality`` (its templates)."""
        from ..metrics.zeroshot import build_zeroshot_classifier

        if not self.classnames:
            raise PredictionError(
                "this alignment model has no zero-shot class names (it was trained on unlabelled pairs and its "
                "config had no zeroshot.classnames): pass them with --classes a,b,c (Predictor(..., "
                "classnames=[...])), or search a gallery with `polymodal retrieve`"
            )
        if self.text_modality is None:
            raise PredictionError(
                f"this alignment model ({', '.join(self.model.modality_names)}) has no text modality to embed class "
                "names: compare its embeddings directly (Predictor.embed) or use `polymodal retrieve`"
            )
        if modality not in self._weights:
            self._weights[modality] = build_zeroshot_classifier(
                self.model, self.classnames, self.templates_for(modality), text_modality=self.text_modality
            )
        return self._weights[modality]

    @torch.no_grad()
    def probabilities(self, batch: Any, used: list[list[str]]) -> Tensor:
        """Probabilities [B, C]: per sample, the mean over its given image / audio modalities of
        softmax(scale · cos(input, class))."""
        total = None
        count = torch.zeros(len(used))
        for modality in self.query_modalities:
            rows = torch.tensor([modality in names for names in used])
            if not rows.any():
                continue
            weights = self.weights(modality)
            logits = self.model.scale() * self.model.encode(batch, modality) @ weights.T
            probs = logits.float().softmax(dim=-1).cpu() * rows.unsqueeze(1)
            total = probs if total is None else total + probs
            count += rows.float()
        assert total is not None  # the Predictor refuses samples without an image / audio input
        return total / count.clamp_min(1).unsqueeze(1)


__all__ = ["PredictionError", "ZeroShotClassifier"]
