"""Ensembles of saved classifiers (``polymodal ensemble``): mean, vote, validation-weighted and stacked."""

from .model import ENSEMBLE_ARCHITECTURE, METHODS, EnsembleError, EnsembleModel, combine_probabilities

__all__ = ["ENSEMBLE_ARCHITECTURE", "METHODS", "EnsembleError", "EnsembleModel", "combine_probabilities"]
