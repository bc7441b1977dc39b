"""Recipes: the only floor that composes everything (data, tasks, Trainer, evaluation, inference) into workflows
— train, evaluate, bench, compare, tune, ensemble, the demos. CLI verbs call recipes; the library (models, tasks,
training, evaluation, inference) never imports one."""
