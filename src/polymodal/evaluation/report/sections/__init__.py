"""Report sections. Every module here is imported with the package, so a kind registered in a new file
(``@REPORT_KINDS.register("captioning")`` in ``sections/captioning.py``) is found without editing anything else.

classification.py, alignment.py and generation.py are the kinds today; robustness.py and training.py hold section
builders that kinds (or the dispatcher) share.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
