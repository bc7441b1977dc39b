"""Old import path: this module is ``polymodal.metrics.bootstrap`` (the same module object)."""

import sys

from ..metrics import bootstrap as _moved

sys.modules[__name__] = _moved
