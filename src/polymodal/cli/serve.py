"""``polymodal serve``: arguments and the command (the server itself is :mod:`polymodal.inference.serve.server`).

    polymodal serve runs/x [--host 127.0.0.1] [--port 8000] [--index DIR] [--max-batch 16] [--max-wait-ms 5]
                           [--api-key KEY] [--max-body-mb 16] [--max-image-pixels N] [--max-audio-seconds S]
                           [--max-text-chars N] [--max-new-tokens N] [--max-queue N] [--timeout-s S]
                           [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import math
import os

from ..inference.serve.limits import ServeLimits, ServeSettings
from .common import positive

DEFAULTS = ServeLimits()


def _float(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"must be a {'non-negative' if allow_zero else 'positive'} number, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _float(text, allow_zero=False)


def _non_negative_float(text: str) -> float:
    return _float(text, allow_zero=True)


def add_parser(sub) -> None:
    """Register ``serve`` on the top-level subparsers of ``polymodal``."""
    parser = sub.add_parser(
        "serve",
        help="serve a model over HTTP: JSON/multipart API with dynamic batching, a web page, metrics",
        description="Serve a saved model (any task) with FastAPI + uvicorn: GET / (web page), GET /health, GET "
        "/v1/model, POST /v1/predict, /v1/embed and /v1/retrieve (alignment models; retrieve needs --index), POST "
        "/v1/generate (generation models: captioning, vqa, transcription, chat; JSON answer or server-sent events), "
        "GET /metrics (Prometheus), API docs at /docs. Concurrent predict / embed requests are batched into one "
        "forward pass; generation requests run one at a time. Needs pip install 'polymodal[serve]'.",
    )
    parser.add_argument("model", help="model directory (or run directory)")
    parser.add_argument("--host", default=None,
                        help="address to bind (default 127.0.0.1; a non-loopback address such as 0.0.0.0 exposes the "
                        "model to the network: set --api-key then)")
    parser.add_argument("--port", type=positive, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--index", default=None, metavar="INDEX_DIR",
                        help="a retrieval index (`polymodal retrieve index`) served on POST /v1/retrieve")
    parser.add_argument("--max-batch", type=positive, default=16,
                        help="most requests per forward pass; 1 turns batching off (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=_non_negative_float, default=5.0,
                        help="how long a request waits for others to share its forward pass (default: %(default)s)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1/* and /metrics (or set POLYMODAL_API_KEY)")
    parser.add_argument("--max-body-mb", type=_positive_float, default=DEFAULTS.max_body_bytes / 2**20,
                        help="largest request body in MiB, else 413 (default: %(default)g)")
    parser.add_argument("--max-image-pixels", type=positive, default=DEFAULTS.max_image_pixels,
                        help="largest image, width × height from its header, else 422 (default: %(default)s)")
    parser.add_argument("--max-audio-seconds", type=_positive_float, default=DEFAULTS.max_audio_seconds,
                        help="longest audio clip, from its header, else 422 (default: %(default)g)")
    parser.add_argument("--max-text-chars", type=positive, default=DEFAULTS.max_text_chars,
                        help="longest text in characters, else 422 (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=positive, default=DEFAULTS.max_new_tokens,
                        help="most new tokens a /v1/generate request may ask for, else 422 (default: %(default)s)")
    parser.add_argument("--max-queue", type=positive, default=DEFAULTS.max_queue,
                        help="requests waiting for the model at once, else 503 (default: %(default)s)")
    parser.add_argument("--timeout-s", type=_positive_float, default=DEFAULTS.timeout_s,
                        help="seconds a request may wait for its result, else 504 (default: %(default)g)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a processor option of the saved model, e.g. --set model.modalities.image."
                        "processor.max_pixels=100000000 (repeatable)")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    limits = ServeLimits(max_body_bytes=int(args.max_body_mb * 2**20), max_image_pixels=args.max_image_pixels,
                         max_audio_seconds=args.max_audio_seconds, max_text_chars=args.max_text_chars,
                         max_new_tokens=args.max_new_tokens, max_queue=args.max_queue, timeout_s=args.timeout_s)
    api_key = args.api_key if args.api_key is not None else os.environ.get("POLYMODAL_API_KEY") or None
    return ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key=api_key, limits=limits)


def run(args: argparse.Namespace) -> int:
    from ..inference.serve.server import run_server

    run_server(args.model, host=args.host, port=args.port, index_dir=args.index, settings=settings_from_args(args),
               overrides=list(args.overrides or []), device=args.device, host_explicit=args.host is not None)
    return 0


__all__ = ["add_parser", "run", "settings_from_args"]
