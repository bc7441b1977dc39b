"""Old import path: this module is ``polymodal.metrics.intervals`` (the same module object)."""

import sys

from ..metrics import intervals as _moved

sys.modules[__name__] = _moved
