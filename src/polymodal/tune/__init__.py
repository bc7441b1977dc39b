"""Hyperparameter search with Optuna (``polymodal tune``): search spaces as data (:mod:`.space`), the study
(:mod:`.study`) and its report (:mod:`.report`). Optuna is an optional extra: ``pip install 'polymodal[tune]'``;
importing this package does not import it."""

from .space import SearchSpace, SearchSpaceError, load_space, parse_space
from .study import TrialFailedError, TuneError, TuneOptions, run_study

__all__ = ["SearchSpace", "SearchSpaceError", "TrialFailedError", "TuneError", "TuneOptions", "load_space",
           "parse_space", "run_study"]
