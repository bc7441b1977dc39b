"""Training: the Trainer loop, optimizers and schedules, checkpoints, logs, fine-tuning strategies."""

from .reproducibility import seed_everything
from .trainer import Trainer, TrainingDivergedError, default_evaluate

__all__ = ["Trainer", "TrainingDivergedError", "default_evaluate", "seed_everything"]
