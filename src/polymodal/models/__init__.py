"""Models: the multimodal classifier, the dual / multi-tower aligner, and their one save/load format
(``persistence``: config.json with the task + model.safetensors + processors). Models return outputs; the task
(``polymodal.tasks``) turns outputs into losses, metrics and predictions. Loading a model by its recorded task is
``polymodal.tasks.load_model``."""

from .aligner import AlignmentModel, AlignmentOutput
from .classifier import MultimodalModel, load_adapter
from .persistence import (
    CONFIG_NAME,
    HF_DIR,
    WEIGHTS_NAME,
    ModelDirectoryError,
    read_model_config,
    save_hf_artifacts,
    saved_task,
    write_model_dir,
)

__all__ = ["CONFIG_NAME", "HF_DIR", "WEIGHTS_NAME", "AlignmentModel", "AlignmentOutput", "ModelDirectoryError",
           "MultimodalModel", "load_adapter", "read_model_config", "save_hf_artifacts", "saved_task",
           "write_model_dir"]
