"""Old import path of the aligner: it lives in ``polymodal.models.aligner`` (its config sections in
``polymodal.config``). Kept so user code keeps working; polymodal itself never imports this module."""

from ..config import AlignmentConfig, ObjectiveConfig  # noqa: F401
from ..models.aligner import AlignmentModel, AlignmentOutput, build_projection, resolve_pairs  # noqa: F401
