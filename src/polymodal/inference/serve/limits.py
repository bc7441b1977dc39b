"""What a served model accepts: request limits, the bind-address rule, and the error every refusal raises.

Each limit is a server setting (``polymodal serve --max-...``); a request over one gets a JSON error naming the
field and the limit (:class:`RequestError`), never a traceback:

==================  ======  ==========================================================================
limit               status  checked
==================  ======  ==========================================================================
max_body_bytes      413     from Content-Length, and while the body streams in (chunked uploads)
max_image_pixels    422     width × height from the image header, before any pixel is decoded
max_audio_seconds   422     frames / sample rate from the audio header, before any sample is decoded
max_text_chars      422     characters of a text input (the tokenizer still truncates to max_length tokens);
                            for /v1/generate, the prompt or all message contents together
max_new_tokens      422     a /v1/generate request's max_new_tokens (a saved default above it is lowered to it)
max_queue           503     requests waiting for the batching worker (with Retry-After)
timeout_s           504     seconds a request may wait for its result (queue + forward pass)
==================  ======  ==========================================================================

The model's own processor caps (``max_pixels``, ``max_seconds_file``) still apply underneath: the effective
limit is the smaller of the two, and ``GET /v1/model`` reports it.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import PolymodalError

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


class ServeError(PolymodalError):
    """A server that cannot start as asked (bad setting, non-loopback bind without --host, missing extra)."""


class RequestError(PolymodalError):
    """A request the server refuses: HTTP ``status``, a stable ``code``, the ``field`` at fault (a modality name,
    ``body``, ``k``, ...) and the ``limit`` it broke ({"name": ..., "value": ...}), all sent back as JSON."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 limit: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.limit = limit
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.limit is not None:
            error["limit"] = self.limit
        return {"error": error}


@dataclass
class ServeLimits:
    """Per-request limits of the HTTP service (see the module docstring for the status each one gives)."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_audio_seconds: float = 60.0
    max_text_chars: int = 10_000
    max_new_tokens: int = 512
    max_queue: int = 256
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ServeError(f"serve limit {key} must be a positive number, got {value!r}")


@dataclass
class ServeSettings:
    """How requests are batched and limited. ``max_batch``: requests per forward pass; ``max_wait_ms``: how long
    the first waiting request is held for others to join it; ``api_key``: bearer token required on /v1/* and
    /metrics when set."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    api_key: str | None = None
    limits: ServeLimits | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ServeError(f"--max-batch must be an integer >= 1, got {self.max_batch!r}")
        if not math.isfinite(self.max_wait_ms) or self.max_wait_ms < 0:
            raise ServeError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ServeError("--api-key is empty: give a token, or leave the option out")
        self.limits = self.limits or ServeLimits()


def is_loopback(host: str) -> bool:
    """True for an address that only this machine can reach: 127.0.0.0/8, ::1 or the name localhost."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to a public interface


def check_bind(host: str | None, explicit: bool, api_key: str | None) -> tuple[str, str | None]:
    """The address to bind and a warning to log (or None).

    ``host`` None means the default, 127.0.0.1. A non-loopback address (0.0.0.0, a LAN address, a host name) is
    refused unless the user typed it (``explicit``, i.e. ``--host`` on the command line), so a model is never
    exposed to the network by a default or a stray setting; exposed without ``api_key``, the warning says so.
    Raises ServeError for a non-loopback address that was not given explicitly.
    """
    if host is None or not host.strip():
        return "127.0.0.1", None
    host = host.strip()
    if is_loopback(host):
        return host, None
    if not explicit:
        raise ServeError(f"refusing to bind {host!r}: it is not a loopback address, so other machines could reach the "
                         "model; pass --host explicitly (and --api-key) to serve on the network")
    if api_key is None:
        return host, (f"serving on {host}, reachable from other machines, with no --api-key: anyone who can reach "
                      "it can use the model; set --api-key (or POLYMODAL_API_KEY) to require a bearer token")
    return host, None


__all__ = ["RequestError", "ServeError", "ServeLimits", "ServeSettings", "check_bind", "is_loopback"]
