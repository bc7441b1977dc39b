"""Freezing: parameters stop training and the module stays in eval mode whatever its parent's mode.

A frozen encoder must not change at all while the rest trains: its weights get ``requires_grad=False`` and its
BatchNorm running statistics / dropout stay in eval mode even when the training loop calls ``model.train()``
(``keep_in_eval`` replaces the module's ``train`` method with one that always selects eval mode).
"""

from __future__ import annotations

import types

from torch import nn


def _train_stays_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def keep_in_eval(module: nn.Module) -> None:
    """Put ``module`` in eval mode and keep it there when a parent calls ``.train()`` (BN stats, dropout)."""
    module.eval()
    module.train = types.MethodType(_train_stays_eval, module)  # type: ignore[method-assign]


def is_locked_in_eval(module: nn.Module) -> bool:
    """True when :func:`keep_in_eval` locked ``module`` (its statistics never update)."""
    return getattr(module.train, "__func__", None) is _train_stays_eval


def freeze_module(module: nn.Module) -> None:
    """Stop every parameter of ``module`` from training and lock it in eval mode."""
    for param in module.parameters():
        param.requires_grad_(False)
    keep_in_eval(module)


def keep_norm_stats_frozen(module: nn.Module) -> None:
    """BatchNorm running statistics of a frozen base must not drift while adapters train (they are not saved)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            keep_in_eval(sub)


__all__ = ["freeze_module", "is_locked_in_eval", "keep_in_eval", "keep_norm_stats_frozen"]
