"""Old import path: this module is ``polymodal.metrics.retrieval`` (the same module object)."""

import sys

from ..metrics import retrieval as _moved

sys.modules[__name__] = _moved
