"""Explanations of what a classifier looks at, for one sample: integrated gradients per modality input (Captum),
attention maps of the fusions, attention rollout of ViT encoders, Shapley values over modalities, and one
HTML page with the PNGs. Entry point: :func:`explain` (the ``polymodal explain`` command). See docs/EXPLAIN.md.

Captum is an optional extra (``pip install 'polymodal[explain]'``): only the integrated-gradients functions need it.
"""

from __future__ import annotations

from .api import explain, resolve_target
from .attention import AttentionRecorder, attention_rollout, cls_patch_map, hf_attentions
from .attributions import Attribution, integrated_gradients, text_integrated_gradients
from .errors import ExplainError
from .shapley import sample_modality_shapley

__all__ = [
    "explain", "resolve_target", "ExplainError", "Attribution", "integrated_gradients", "text_integrated_gradients",
    "AttentionRecorder", "attention_rollout", "cls_patch_map", "hf_attentions", "sample_modality_shapley",
]
