"""``python -m polymodal``: the same entry point as the ``polymodal`` command (thread policy included)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
