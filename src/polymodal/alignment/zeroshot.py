"""Old import path: this module is ``polymodal.metrics.zeroshot`` (the same module object)."""

import sys

from ..metrics import zeroshot as _moved

sys.modules[__name__] = _moved
