"""AdamW with decoupled weight decay and per-part learning rates, and warmup + decay schedules.

Parameter groups (only parameters with ``requires_grad``; frozen encoders are left out entirely):
  - 1-D parameters (biases, norm scales, learned tokens/scalars) and names in ``model.no_weight_decay()``
    get no weight decay: decaying them toward 0 hurts and has no regularising effect worth having.
  - parameters under ``encoders.`` use ``encoder_lr`` when it is set (pretrained encoders usually want a
    smaller step than a freshly initialised head).

Schedules match ``transformers.get_{cosine,linear,constant}_schedule_with_warmup`` exactly: the factor rises
linearly from 0 over the warmup steps, then decays (cosine / linear to 0) or stays at 1. Stepped once per
optimizer step.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def _is_encoder_param(name: str) -> bool:
    return name.startswith("encoders.") or ".encoders." in name


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, encoder_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: {decay, no_decay} × {encoders, rest}; empty groups are dropped; each has a ``name``."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and name not in skip
        encoder = encoder_lr is not None and _is_encoder_param(name)
        groups.setdefault((encoder, decay), []).append(param)
    if not groups:
        raise ValueError(
            "the model has no trainable parameters (requires_grad is False everywhere): "
            "unfreeze the head or an encoder before training"
        )
    result = []
    for (encoder, decay), params in sorted(groups.items()):
        result.append(
            {
                "name": f"{'encoders' if encoder else 'model'}_{'decay' if decay else 'no_decay'}",
                "params": params,
                "lr": encoder_lr if encoder else lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    return result


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.01, encoder_lr: float | None = None, betas=(0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the fused CUDA kernel when every parameter lives on a GPU."""
    groups = parameter_groups(model, lr, weight_decay, encoder_lr)
    params = [p for group in groups for p in group["params"]]
    options: dict[str, Any] = {"lr": lr, "betas": betas}
    if "fused" in inspect.signature(torch.optim.AdamW).parameters and all(
        p.is_cuda and p.is_floating_point() for p in params
    ):
        options["fused"] = True
    return torch.optim.AdamW(groups, **options)


class WarmupSchedule:
    """LR factor at an optimizer step: linear warmup, then cosine / linear decay to 0 or constant.

    A callable object of plain numbers, so LambdaLR's state_dict records (and restores) the schedule's shape.
    """

    def __init__(self, kind: str, warmup_steps: int, total_steps: int):
        if kind not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown schedule {kind!r}; expected cosine, linear or constant")
        if total_steps < 1:
            raise ValueError(f"a schedule needs at least one step, got total_steps={total_steps}")
        self.kind, self.warmup_steps, self.total_steps = kind, int(warmup_steps), int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return math.ceil(total_steps * warmup_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_ratio: float) -> LambdaLR:
    schedule = WarmupSchedule(kind, warmup_steps_for(total_steps, warmup_ratio), total_steps)
    return LambdaLR(optimizer, schedule)
