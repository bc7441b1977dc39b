"""Finiteness guards for what a run keeps: a checkpoint or a best model is only written when its weights are
finite AND it still gives finite outputs.

Why outputs too: a run with a far too high learning rate can end an epoch with a finite loss and finite but
huge weights (~1e6) that overflow on the next forward pass; checking the loss alone would keep that model as
``best/`` and ``predict`` would print NaN probabilities. So before saving, the Trainer re-runs the last training
batch through the model in eval mode (no gradients, RNG state untouched, so exact resume is unaffected).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating tensor holding NaN or ±inf, or None when all are finite."""
    for name, tensor in named:
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def nonfinite_weights(model: nn.Module) -> str | None:
    """The first parameter or buffer of ``model`` that is not finite (None: all finite)."""
    return first_nonfinite(model.named_parameters()) or first_nonfinite(model.named_buffers())


def _tensors(value: Any, prefix: str) -> Iterable[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}[{key!r}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _tensors(getattr(value, field.name), f"{prefix}.{field.name}" if prefix else field.name)


def nonfinite_outputs(output: Any) -> str | None:
    """The first tensor of a model output (``loss``, ``logits``, nested dicts / dataclasses) that is not finite."""
    return first_nonfinite(_tensors(output, ""))


@torch.no_grad()
def probe_outputs(model: nn.Module, batch: Any, autocast: Callable[[], Any] | None = None) -> str | None:
    """Run ``batch`` through ``model`` in eval mode; the first non-finite output field, or None.

    The model's train/eval mode and every RNG (CPU and the batch's CUDA device) are restored, so a probe
    changes nothing a later step or an exact resume depends on.
    """
    was_training = model.training
    devices = []
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cuda":
        devices = [first.device]
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), (autocast() if autocast else contextlib.nullcontext()):
            output = model(batch)
        return nonfinite_outputs(output)
    finally:
        model.train(was_training)
