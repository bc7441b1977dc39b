"""The root of polymodal's expected errors.

Every error a user can cause with ordinary input (a bad config key, a broken file, a diverged run, a full disk,
a run directory held by another run) derives from :class:`PolymodalError`. The CLI prints such an error as one
line naming the cause (a traceback only under ``--debug``); anything else is a bug and keeps its traceback.
This module imports nothing from polymodal, so every layer may raise these.
"""

from __future__ import annotations


class PolymodalError(Exception):
    """An expected, user-facing error. ``str(err)`` is the one line the CLI prints."""
