"""Old import path: this package is ``polymodal.metrics.generation`` (the same module objects, submodules too)."""

import importlib
import sys

from ...metrics import generation as _moved

for _name in ("_inputs", "bleu", "cider", "meteor", "result", "rouge", "tokenizer", "vqa", "wer"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"{_moved.__name__}.{_name}")
sys.modules[__name__] = _moved
