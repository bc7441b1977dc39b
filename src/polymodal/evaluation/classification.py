"""Old import path: this module is ``polymodal.metrics.classification`` (the same module object)."""

import sys

from ..metrics import classification as _moved

sys.modules[__name__] = _moved
