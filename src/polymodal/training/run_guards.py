"""The Trainer's guards: what stops a run (divergence, a signal) and what it says then, in one line.

Kept apart from the loop so that ``trainer.py`` reads as the loop. :class:`RunGuards` is a mixin of
:class:`~.trainer.Trainer` and reads its attributes: ``state``, ``model``, ``autocast``, ``monitor``,
``run_dir``, ``checkpoint_dir``, ``batches_per_epoch``, ``total_steps``, and the guard's own ``_stop``
(StopSignals while ``fit`` runs), ``_probe_batch`` (the last training batch) and ``_healthy_step``.

Divergence is checked at three levels, so nothing non-finite is ever kept:
  - each training loss and (with clipping) gradient norm (:meth:`_check_finite`);
  - each epoch row: the monitored metric, train_loss and val_loss (:meth:`_check_epoch_metrics`);
  - before anything is saved (best/ or the checkpoint): the weights, and the outputs of the last training batch
    re-run in eval mode (:meth:`_assert_healthy`, see :mod:`.guards`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import PolymodalError
from .checkpoint import is_complete_checkpoint
from .guards import nonfinite_weights, probe_outputs
from .interrupt import TrainingInterrupted, resume_command, signal_name

HINT = "Try a lower train.lr, train.clip_grad_norm, or precision fp32."


class TrainingDivergedError(PolymodalError, RuntimeError):
    """The loss, the gradient norm, the weights or the outputs became NaN or infinite; nothing after the last
    healthy state was saved, so the last checkpoint and best/ are the last whose weights and outputs are finite."""


class RunGuards:
    """Divergence and interrupt handling of the Trainer (a mixin; see the module docstring)."""

    def _stop_requested(self) -> bool:
        return self._stop is not None and self._stop.requested is not None

    def _kept_note(self) -> str:
        if is_complete_checkpoint(self.checkpoint_dir):
            return f"the last good checkpoint is kept at {self.checkpoint_dir}"
        return "no checkpoint had been written yet"

    # ------------------------------------------------------------------------------------------ divergence

    def _check_finite(self, value: torch.Tensor, what: str, batch) -> None:
        """A training loss / gradient norm: one line naming the value, epoch, step in progress and samples."""
        if torch.isfinite(value).all():
            return
        ids = ", ".join(batch.ids[:5]) if batch.ids else "?"
        raise TrainingDivergedError(
            f"training diverged: the {what} became {float(value.detach())} at epoch {self.state['epoch'] + 1}, "
            f"optimizer step {self.state['global_step'] + 1} (batch samples {ids}, ...); {self._kept_note()}. {HINT}"
        )

    def _diverged(self, what: str) -> TrainingDivergedError:
        """After optimizer step ``global_step``: ``what`` went wrong (names the last training batch's samples)."""
        state, batch = self.state, self._probe_batch
        ids = ", ".join(batch.ids[:5]) + ", ..." if batch is not None and getattr(batch, "ids", None) else "?"
        return TrainingDivergedError(
            f"training diverged: {what} at epoch {state['epoch'] + 1}, optimizer step {state['global_step']} "
            f"(last batch samples {ids}); {self._kept_note()}. {HINT}"
        )

    def _check_epoch_metrics(self, row: dict[str, Any]) -> None:
        """The monitored metric and the losses of an epoch row must be finite (NaN here: diverged in eval)."""
        for key in dict.fromkeys((self.monitor, "train_loss", "val_loss")):
            value = row.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                where = "validation" if key.startswith("val_") else "the epoch mean"
                raise self._diverged(f"{where} gave {key} {value}")

    def _assert_healthy(self) -> None:
        """Weights finite, and the last training batch still gives finite outputs; checked once per step."""
        step = self.state["global_step"]
        if self._healthy_step == step:
            return
        bad = nonfinite_weights(self.model)
        if bad is not None:
            raise self._diverged(f"the weight {bad} became non-finite")
        if self._probe_batch is not None:
            try:
                bad = probe_outputs(self.model, self._probe_batch, self.autocast)
            except (RuntimeError, ValueError, TypeError):  # a model that cannot re-run a batch in eval mode
                bad = None
            if bad is not None:
                raise self._diverged(f"the model's output {bad} became non-finite (weights too large)")
        self._healthy_step = step

    # ------------------------------------------------------------------------------------------ signals

    def _interrupted(self, signum: int, saved: bool) -> TrainingInterrupted:
        """One line: where the run stopped, what was kept, and the command that continues it."""
        state = self.state
        where = (
            f"epoch {state['epoch'] + 1} ({state['batches_done']}/{self.batches_per_epoch} batches), "
            f"optimizer step {state['global_step']}/{self.total_steps}"
        )
        kept = f"checkpoint saved to {self.checkpoint_dir}" if saved else f"stopped at once, nothing saved; {self._kept_note()}"
        hint = f"; continue with: {resume_command(self.run_dir)}" if is_complete_checkpoint(self.checkpoint_dir) else ""
        return TrainingInterrupted(
            f"training interrupted by {signal_name(signum)} at {where}: {kept}{hint}", signum, self.checkpoint_dir
        )
