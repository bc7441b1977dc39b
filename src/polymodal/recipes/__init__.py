"""Recipes: the only floor that composes everything (data, tasks, Trainer, evaluation, inference) into workflows
— train, evaluate, compare (``eval --compare``), bench, tune (the Optuna study), ensemble, retrieve (index / query)
and the demos (``recipes.demos``). CLI verbs (``polymodal.cli``) call recipes; the library (models, tasks,
training, evaluation, inference) never imports one. Modules are imported on use: ``from polymodal.recipes.train
import train``."""
