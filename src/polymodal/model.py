"""Old import path of the classifier (``from polymodal.model import MultimodalModel``): it lives in
``polymodal.models`` now. Kept so user code keeps working; polymodal itself never imports this module."""

from .files import atomic_save_safetensors, atomic_write_text  # noqa: F401
from .models.classifier import MultimodalModel, load_adapter  # noqa: F401
from .models.persistence import CONFIG_NAME, HF_DIR, WEIGHTS_NAME, save_hf_artifacts  # noqa: F401
