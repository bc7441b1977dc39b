from .classification import ClassificationHead, classification_loss, classification_loss_sum, probabilities

__all__ = ["ClassificationHead", "classification_loss", "classification_loss_sum", "probabilities"]
