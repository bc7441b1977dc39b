"""Parameter accounting: total / trainable parameters per component (encoders, projections, fusion, head; an
aligner's projections, objectives and logit scale).

Written to metrics.json by the recipes and printed as a table, so the share a fine-tuning strategy trains is
visible (e.g. LoRA: a few percent of the encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class ComponentCount:
    strategy: str
    total: int
    trainable: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


@dataclass
class FinetuneSummary:
    """Total / trainable parameters per component (``encoder.<name>``, projections, fusion, head) and overall."""

    components: dict[str, ComponentCount]
    total: int
    trainable: int

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for metrics.json."""
        return {
            "components": {
                name: {"strategy": c.strategy, "total": c.total, "trainable": c.trainable, "trainable_share": c.share}
                for name, c in self.components.items()
            },
            "total": self.total,
            "trainable": self.trainable,
            "trainable_share": self.trainable_share,
        }

    def format_table(self) -> str:
        rows = [(name, c.strategy, c.total, c.trainable, c.share) for name, c in self.components.items()]
        rows.append(("TOTAL", "", self.total, self.trainable, self.trainable_share))
        width = max(len(r[0]) for r in rows)
        lines = [f"{'component':<{width}}  {'strategy':<12} {'total':>12} {'trainable':>12} {'share':>8}"]
        for name, strategy, total, trainable, share in rows:
            lines.append(f"{name:<{width}}  {strategy:<12} {total:>12,} {trainable:>12,} {share:>8.2%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _count(module: nn.Module | None) -> tuple[int, int]:
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def parameter_summary(model: nn.Module, strategies: dict[str, str] | None = None) -> FinetuneSummary:
    """Parameter accounting of any polymodal model (before or after apply_finetune): ``encoder.<name>`` per
    encoder, then every other top-level part in order — a classifier's ``projections`` / ``fusion`` / ``head``
    (late fusion's per-modality ``heads`` count as ``head``), an aligner's ``projections`` / ``objectives`` (ITM /
    MLM layers) and its bare parameters ``logit_scale`` / ``logit_bias``. Parts with no parameter are left out."""
    strategies = strategies or {}
    components: dict[str, ComponentCount] = {}
    for name, encoder in getattr(model, "encoders", {}).items():  # a model without encoders: its parts only
        total, trainable = _count(encoder)
        default = "full" if trainable else "frozen"
        components[f"encoder.{name}"] = ComponentCount(strategies.get(name, default), total, trainable)
    parts: list[tuple[str, list[nn.Parameter]]] = [
        ("head" if name == "heads" else name, list(child.parameters()))
        for name, child in model.named_children() if name != "encoders"
    ]
    parts += [(name, [param]) for name, param in model.named_parameters(recurse=False)]
    for label, params in parts:
        total = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        if total:
            components[label] = ComponentCount("full" if trainable else "frozen", total, trainable)
    total, trainable = _count(model)
    return FinetuneSummary(components=components, total=total, trainable=trainable)


__all__ = ["ComponentCount", "FinetuneSummary", "parameter_summary"]
