"""Flat-tensor wrappers around a model's entry points, the form ``torch.onnx.export`` traces.

An ONNX graph takes a flat list of named tensors, while polymodal models take a :class:`~polymodal.types.Batch`.
For every modality the graph inputs are its processor's tensors followed by its presence flag, named
``"<modality>.<key>"`` and ``"<modality>.present"`` (e.g. ``audio.features`` [B, n_mels, T],
``audio.feature_mask`` [B, T], ``audio.present`` [B] bool). An absent modality is fed as the processor's
``empty()`` placeholder with ``present`` False, exactly as :class:`~polymodal.inference.Predictor` builds it, so
one graph serves every subset of modalities.

Entry points: a classifier's ``logits`` [B, C] (all modalities in one graph) and, for an alignment model, one
graph per tower giving its unit-norm ``embedding`` [B, E] (zeros where ``present`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ...types import Batch

PRESENT_KEY = "present"


@dataclass
class GraphInput:
    """One graph input: ``name`` = "<modality>.<key>", its dtype and shape with symbolic (str) dynamic axes."""

    name: str
    modality: str
    key: str
    dtype: str
    shape: list[int | str]

    def to_dict(self) -> dict:
        return {"name": self.name, "modality": self.modality, "key": self.key, "dtype": self.dtype,
                "shape": list(self.shape)}


@dataclass
class GraphSpec:
    """One entry point: its file, inputs (in graph order), outputs and what a row of each output means."""

    entry: str  # "classifier" or the tower's modality name
    file: str
    modalities: list[str]
    inputs: list[GraphInput] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def to_dict(self) -> dict:
        return {"file": self.file, "modalities": list(self.modalities), "inputs": [i.to_dict() for i in self.inputs],
                "outputs": list(self.outputs)}


def input_name(modality: str, key: str) -> str:
    return f"{modality}.{key}"


def flatten_batch(batch: Batch, layout: list[tuple[str, list[str]]]) -> tuple[Tensor, ...]:
    """The Batch as the graph's positional inputs: per modality its tensors (``layout`` order), then present."""
    flat: list[Tensor] = []
    for modality, keys in layout:
        flat += [batch.inputs[modality][key] for key in keys]
        flat.append(batch.present[modality])
    return tuple(flat)


def _unflatten(flat: tuple[Tensor, ...], layout: list[tuple[str, list[str]]]) -> Batch:
    it = iter(flat)
    inputs, present = {}, {}
    for modality, keys in layout:
        inputs[modality] = {key: next(it) for key in keys}
        present[modality] = next(it)
    return Batch(inputs=inputs, present=present)


class ClassifierGraph(nn.Module):
    """flat inputs (every modality) → logits [B, C] of a MultimodalModel (before softmax / sigmoid)."""

    def __init__(self, model: nn.Module, layout: list[tuple[str, list[str]]]):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, *flat: Tensor) -> Tensor:
        return self.model(_unflatten(flat, self.layout)).logits


class TowerGraph(nn.Module):
    """flat inputs of one modality → its unit-norm embedding [B, E] (AlignmentModel.encode)."""

    def __init__(self, model: nn.Module, modality: str, keys: list[str]):
        super().__init__()
        self.model = model
        self.modality = modality
        self.layout = [(modality, keys)]

    def forward(self, *flat: Tensor) -> Tensor:
        return self.model.encode(_unflatten(flat, self.layout), self.modality)


def dynamic_axes_of(modality: str, kind: str, key: str, tensor: Tensor) -> dict[int, str]:
    """Axis index → symbolic name for one batched input: the batch axis always; for text and audio also the last
    (sequence / time) axis, whose length varies with the input (padding="longest", max_seconds=None)."""
    axes = {0: "batch"}
    if kind in ("text", "audio") and tensor.dim() >= 2:
        axes[tensor.dim() - 1] = f"{modality}_length"
    return axes


def describe_inputs(batch: Batch, layout: list[tuple[str, list[str]]], kinds: dict[str, str]) -> list[GraphInput]:
    specs = []
    for modality, keys in layout:
        for key in [*keys, PRESENT_KEY]:
            tensor = batch.present[modality] if key == PRESENT_KEY else batch.inputs[modality][key]
            axes = {0: "batch"} if key == PRESENT_KEY else dynamic_axes_of(modality, kinds[modality], key, tensor)
            shape: list[int | str] = [axes.get(i, int(n)) for i, n in enumerate(tensor.shape)]
            specs.append(GraphInput(input_name(modality, key), modality, key, str(tensor.dtype).removeprefix("torch."),
                                    shape))
    return specs


def onnx_dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    """``dynamic_axes`` for torch.onnx.export: every str entry of every input / output shape."""
    axes = {}
    for item in [*[i.to_dict() for i in spec.inputs], *spec.outputs]:
        axes[item["name"]] = {i: n for i, n in enumerate(item["shape"]) if isinstance(n, str)}
    return axes
