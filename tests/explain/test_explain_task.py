"""explain dispatches on the model's recorded task: a model of another task than classification is refused with a
sentence naming its task, before anything is computed or written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.config import from_dict
from polymodal.explain import ExplainError, explain
from polymodal.models import AlignmentModel
from polymodal.models.aligner import AlignmentConfig


def test_an_alignment_model_is_refused_by_its_task(tmp_path):
    torch.manual_seed(0)
    modalities = {"image": {"kind": "image", "encoder": "image_cnn", "options": {"channels": [4, 8]},
                            "processor": {"image_size": 8, "channels": 1}},
                  "text": {"kind": "text", "options": {"dim": 16, "depth": 1, "heads": 2}}}
    AlignmentModel(from_dict(AlignmentConfig, {"modalities": modalities, "embed_dim": 8})).save_pretrained(
        tmp_path / "aligner")
    with pytest.raises(ExplainError, match=r"a model of the alignment task .* needs a classification model"):
        explain(tmp_path / "aligner", {"image": np.zeros((8, 8), dtype=np.uint8)}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
