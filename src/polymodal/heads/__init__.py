from .classification import (
    CLASSIFICATION_TERM,
    ClassificationHead,
    classification_loss,
    classification_loss_sum,
    classification_objective,
    probabilities,
)

__all__ = ["CLASSIFICATION_TERM", "ClassificationHead", "classification_loss", "classification_loss_sum",
           "classification_objective", "probabilities"]
