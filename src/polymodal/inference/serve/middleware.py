"""The outermost layer of every HTTP request: body-size limit, JSON 500 for bugs, access log and request metrics.

Pure ASGI rather than a FastAPI middleware so that it also sees a body that streams in without a Content-Length
(it counts bytes as they are received) and can answer 413 before the app has read the whole body.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from .limits import RequestError
from .metrics import ServeMetrics

access_log = logging.getLogger("polymodal.serve.access")
log = logging.getLogger("polymodal.serve")


class BodyTooLarge(Exception):
    pass


def error_response(status: int, code: str, message: str, field: str | None = None,
                    limit: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(RequestError(status, code, message, field, limit).body(), status_code=status, headers=headers)


class ServeMiddleware:
    """Pure ASGI (so it also sees bodies that stream in): body-size limit, catch-all 500, access log, metrics."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: ServeMetrics):
        self.app = app
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("polymodal", {"batch_size": None})
        status = {"code": 500, "started": False}
        limit = {"name": "max_body_bytes", "value": self.max_body}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        async def reply(response: Response) -> None:
            await response(scope, receive, send_wrapper)

        received = 0

        async def receive_wrapper() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge()
            return message

        too_large = error_response(413, "body_too_large", f"the request body is over the limit max_body_bytes="
                                    f"{self.max_body:,}; send smaller files", "body", limit)
        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                if length.isdigit():
                    await reply(too_large)
                else:
                    await reply(error_response(400, "bad_request", "invalid Content-Length header", "body"))
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except BodyTooLarge:
            if not status["started"]:
                await reply(too_large)
        except ClientDisconnect:  # the client went away mid-body: nobody to answer (logged as nginx's 499)
            status["code"] = 499
        except Exception:  # a bug: log the traceback here, give the client a JSON 500 without it
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not status["started"]:
                await reply(error_response(500, "internal_error", "internal server error; the server log has "
                                            "the details"))
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if status["code"] in (413, 503, 504, 401):
                self.metrics.rejected.labels(reason=str(status["code"])).inc()
            self.metrics.observe_request(route, status["code"], seconds)
            access_log.info(json.dumps({
                "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "method": scope.get("method"), "route": route, "status": status["code"],
                "latency_ms": round(seconds * 1000, 3), "batch_size": state.get("batch_size"),
            }))


__all__ = ["BodyTooLarge", "ServeMiddleware", "error_response"]
