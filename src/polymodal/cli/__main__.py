"""``python -m polymodal.cli``: the same entry point as the ``polymodal`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
