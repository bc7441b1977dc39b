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

:class:`AlignmentPostprocessor` is the alignment task's post-processing (``AlignmentTask.postprocessor``): zero-shot
labels, or embeddings. It lives with the tasks (below ``inference/``); ``polymodal.inference.zeroshot`` re-exports
:class:`ZeroShotClassifier` and ``PredictionError`` from their old import path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .predictions import Prediction, PredictionError, given_modalities


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


class AlignmentPostprocessor:
    """Alignment model outputs → predictions: a zero-shot :class:`~.predictions.Prediction` of each sample's image /
    audio inputs (the mean over those it gives of softmax(scale · cos), :meth:`ZeroShotClassifier.probabilities`),
    or, with ``embed``, their unit-norm embeddings. ``classnames`` / ``templates`` replace those saved with the
    model; ``model_dir`` finds the class names an older run recorded next to best/."""

    head_task = None
    can_embed = True

    def __init__(self, model: Any, model_dir: Path | None = None, classnames: Sequence[str] | None = None,
                 templates: Sequence[str] | dict[str, Sequence[str]] | None = None):
        self.model = model
        self.zeroshot = ZeroShotClassifier(model, classnames, templates, model_dir)
        self.labels = list(self.zeroshot.classnames)

    def check(self, given: list[str], embed: bool = False) -> None:
        """Zero-shot labels are for image / audio inputs: a sample with a text (or nothing else) is refused with
        what to do instead. Embeddings take any input."""
        if embed:
            return
        zeroshot = self.zeroshot
        texts = [name for name in given if name not in zeroshot.query_modalities]
        if texts or not given:
            kind = "/".join(sorted({self.model.config.modalities[m].kind for m in zeroshot.query_modalities})) or "image"
            raise PredictionError(
                f"an alignment model ({', '.join(self.model.modality_names)}) predicts a zero-shot label for {kind} "
                f"inputs only; it does not classify {', '.join(texts) or 'an empty sample'}",
                hint="To find the items that match a text, build an index and query it: `polymodal retrieve index "
                "MODEL --data DATA --modality NAME --out INDEX`, then `polymodal retrieve query INDEX --text ...`; "
                "to get its embedding, Predictor.embed (`polymodal predict --embed`)",
                modalities=texts)

    @torch.no_grad()
    def predict(self, batch: Any) -> list[Prediction]:
        used = given_modalities(batch, list(self.model.modality_names))
        for index, names in enumerate(used):
            try:
                self.check(names)
            except PredictionError as err:
                raise PredictionError(f"sample {index}: {err}" if len(used) > 1 else str(err)) from None
        probs = self.zeroshot.probabilities(batch, used)
        names = self.zeroshot.classnames
        return [Prediction(label=names[int(row.argmax())], probabilities=dict(zip(names, row.tolist())),
                           modalities=used[i]) for i, row in enumerate(probs)]

    @torch.no_grad()
    def embed(self, batch: Any) -> dict[str, Tensor]:
        given = [name for name in self.model.modality_names if name in batch.present and bool(batch.present[name].any())]
        return {name: self.model.encode(batch, name).cpu() for name in given}


__all__ = ["AlignmentPostprocessor", "ZeroShotClassifier"]
