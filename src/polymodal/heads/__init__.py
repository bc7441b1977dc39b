from .classification import ClassificationHead, classification_loss, probabilities

__all__ = ["ClassificationHead", "classification_loss", "probabilities"]
