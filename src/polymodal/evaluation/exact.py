"""Old import path: this module is ``polymodal.metrics.exact`` (the same module object)."""

import sys

from ..metrics import exact as _moved

sys.modules[__name__] = _moved
