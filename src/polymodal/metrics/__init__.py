"""Metric definitions each task owns, below the tasks so that tasks and the report both read them:
classification (accuracy, P/R/F1, ROC-AUC, confusion), retrieval (multi-positive Recall@K, ranks, mAP),
alignment (retrieval + zero-shot over a model's embeddings), zero-shot classifiers. Pure functions over tensors /
arrays (and model outputs); nothing here imports a model class, training or the report."""
