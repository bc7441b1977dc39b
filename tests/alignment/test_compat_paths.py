"""The old alignment import paths that user code holds (``polymodal.alignment``, ``polymodal.alignment.model``)
give the very objects of their new homes; the rest of the old package moved for good (recipes, index, CLI)."""

from __future__ import annotations

import importlib

import pytest


def test_old_alignment_paths_are_the_new_objects():
    import polymodal.alignment as old
    import polymodal.alignment.model as old_model
    from polymodal.config import AlignmentConfig
    from polymodal.inference.retrieval import EmbeddingIndex
    from polymodal.metrics.zeroshot import zeroshot_metrics
    from polymodal.models.aligner import AlignmentModel

    assert old.AlignmentModel is old_model.AlignmentModel is AlignmentModel
    assert old.AlignmentConfig is old_model.AlignmentConfig is AlignmentConfig
    assert old.EmbeddingIndex is EmbeddingIndex and old.zeroshot_metrics is zeroshot_metrics


@pytest.mark.parametrize("gone", ["polymodal.alignment.recipe", "polymodal.alignment.cli", "polymodal.alignment.demo",
                                  "polymodal.alignment.retrieval", "polymodal.commands", "polymodal.demo"])
def test_moved_workflow_modules_are_gone(gone):
    """Workflows live in polymodal.recipes and the CLI in polymodal.cli: no second copy to drift."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(gone)
