"""``OnnxPredictor(export_dir)``: predictions from an ONNX export with onnxruntime, no PyTorch model needed.

It is a :class:`~polymodal.inference.Predictor` whose model is :class:`OnnxModel`, a stand-in that answers the
calls Predictor makes (``forward(batch).logits``, ``encode(batch, modality)``, ``scale()``, ``processors``) by
running the exported graphs. Preprocessing uses polymodal's own processors rebuilt from the export's manifest,
so a prediction is the same type (label + probabilities, or embeddings) with the same numbers, within the export's
parity, as ``Predictor(model_dir)``; alignment exports also give zero-shot labels from their saved class names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import ModalityConfig, from_dict
from ...types import Batch
from ..predictor import Predictor
from .onnx import FORMAT, MANIFEST_NAME, ExportError, require_onnx

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


def read_manifest(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The export's manifest.json, or ExportError saying what the folder is missing."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST_NAME
    if not path.is_file():
        hint = (" (it is a model directory: export it first, polymodal export MODEL_DIR --format onnx --out DIR)"
                if (export_dir / "model.safetensors").is_file() else "")
        raise ExportError(f"{export_dir} is not an ONNX export: {MANIFEST_NAME} not found{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{path} cannot be read as JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                          f"not {FORMAT!r}; re-export the model")
    return manifest


def manifest_tasks(manifest: dict[str, Any]) -> tuple[str, str | None]:
    """(task, head task) of an export: ("classification", "multiclass") / ("alignment", None). Exports written
    before the manifest recorded the model's task held the head task (or "alignment") in ``task``."""
    task = manifest.get("task")
    if task == "alignment" or manifest.get("architecture") == "AlignmentModel":
        return "alignment", None
    if task in ("multiclass", "binary", "multilabel"):  # an older export: the head task stood in "task"
        return "classification", task
    if not isinstance(task, str):
        raise ExportError(f"{MANIFEST_NAME}: records no task; re-export the model")
    return task, manifest.get("head_task")


class OnnxModel(nn.Module):
    """The exported graphs behind the model interface Predictor uses (no parameters: the graphs hold them).
    ``task_name``: the exported model's task (the Predictor dispatches on it); ``task``: a classifier's head task."""

    def __init__(self, export_dir: str | os.PathLike, threads: int | None = None,
                 providers: list[str] | None = None):
        super().__init__()
        _, onnxruntime = require_onnx()
        self.export_dir = Path(export_dir)
        self.manifest = manifest = read_manifest(self.export_dir)
        modalities = {}
        for name, record in manifest["modalities"].items():
            cfg = from_dict(ModalityConfig, dict(record), f"{MANIFEST_NAME}: modalities.{name}")
            if cfg.pretrained and not os.path.isabs(cfg.pretrained):
                cfg.pretrained = str(self.export_dir / cfg.pretrained)
            modalities[name] = cfg
        self.config = SimpleNamespace(modalities=modalities)
        self.modality_names = list(modalities)
        self.task_name, self.task = manifest_tasks(manifest)
        self.labels = list(manifest.get("labels") or [])
        self._processors: dict[str, Any] | None = None
        self.graphs = manifest["graphs"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or max(1, min(4, torch.get_num_threads())))
        options.log_severity_level = 3
        self.sessions = {}
        for entry, graph in self.graphs.items():
            path = self.export_dir / graph["file"]
            if not path.is_file():
                raise ExportError(f"{self.export_dir}: graph file {graph['file']} of entry {entry!r} is missing")
            self.sessions[entry] = onnxruntime.InferenceSession(
                str(path), options, providers=providers or ["CPUExecutionProvider"])
        if self.task_name == "alignment":
            self.zeroshot = manifest.get("zeroshot")
            # a tensor, as on AlignmentModel: zero-shot code reads its device
            self.register_buffer("logit_scale", torch.tensor(float(manifest["alignment"]["logit_scale"])))

    @property
    def processors(self) -> dict[str, Any]:
        if self._processors is None:
            from ...data import build_processors

            self._processors = build_processors(self.config.modalities)
        return self._processors

    def _run(self, entry: str, batch: Batch) -> torch.Tensor:
        graph = self.graphs[entry]
        feeds = {}
        for spec in graph["inputs"]:
            modality, key = spec["modality"], spec["key"]
            tensor = batch.present[modality] if key == "present" else batch.inputs[modality][key]
            feeds[spec["name"]] = tensor.detach().cpu().numpy().astype(NUMPY_DTYPES[spec["dtype"]], copy=False)
        return torch.from_numpy(np.asarray(self.sessions[entry].run(None, feeds)[0]))

    def forward(self, batch: Batch) -> SimpleNamespace:
        """Classifier exports: ``.logits`` [B, C]."""
        return SimpleNamespace(logits=self._run("classifier", batch))

    def encode(self, batch: Batch, modality: str) -> torch.Tensor:
        """Alignment exports: unit-norm embeddings [B, E] of ``modality`` (zeros where absent)."""
        if modality not in self.sessions:
            raise KeyError(f"unknown modality {modality!r}; this export has towers {list(self.sessions)}")
        return self._run(modality, batch)

    # AlignmentModel splits a tower into encode_modality (encoder) and embed (projection + normalisation); a tower
    # graph runs both, so encode_modality only packs its inputs and embed runs the graph (zero-shot code uses these).
    def encode_modality(self, name: str, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> Batch:
        return Batch(inputs={name: inputs}, present={name: present})

    def embed(self, name: str, packed: Batch) -> torch.Tensor:
        return self.encode(packed, name)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) of the exported alignment model (the cosine multiplier of zero-shot logits)."""
        return self.logit_scale.exp()


class OnnxPredictor(Predictor):
    """``OnnxPredictor("export/").predict(image="seven.png", audio="seven.wav")`` → Prediction (label +
    probabilities), as :class:`~polymodal.inference.Predictor` gives for the model that was exported.

    ``threads``: onnxruntime intra-op threads (default min(4, torch threads)). ``overrides``, ``classnames``,
    ``templates``, ``threshold``: as for Predictor. Raises ExportError for a folder that is not an export.
    """

    def __init__(self, export_dir: str | os.PathLike, threshold: float = 0.5, overrides: list[str] | None = None,
                 classnames: list[str] | None = None, templates: list[str] | dict[str, list[str]] | None = None,
                 threads: int | None = None, providers: list[str] | None = None):
        super().__init__(OnnxModel(export_dir, threads, providers), threshold=threshold, overrides=overrides,
                         classnames=classnames, templates=templates)
        self.source = Path(export_dir)
