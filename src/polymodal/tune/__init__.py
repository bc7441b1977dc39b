"""Hyperparameter search spaces as data (:mod:`.space`) and the study report (:mod:`.report`). The study itself
(Optuna driving train runs, ``polymodal tune``) is a recipe: :mod:`polymodal.recipes.tune`. Optuna is an
optional extra: ``pip install 'polymodal[tune]'``; importing this package does not import it."""

from .space import SearchSpace, SearchSpaceError, load_space, parse_space

__all__ = ["SearchSpace", "SearchSpaceError", "load_space", "parse_space"]
