"""HTTP serving of any polymodal model: FastAPI + uvicorn, dynamic batching, limits, a web page, metrics.

    polymodal serve MODEL_DIR [--index INDEX_DIR] [--max-batch 16] [--max-wait-ms 5] [--api-key KEY]
                              [--max-new-tokens 512]

Modules: :mod:`.app` (routes, auth, error bodies), :mod:`.middleware` (body limit, access log, JSON 500),
:mod:`.batching` (the dynamic batcher), :mod:`.engine` (batch → Predictor), :mod:`.inputs` (request bodies →
checked samples), :mod:`.limits` (limits, bind rule, RequestError), :mod:`.schemas` (pydantic models),
:mod:`.metrics` (Prometheus), :mod:`.server` (load + uvicorn), :mod:`.generate_route` (``POST /v1/generate``, JSON
or server-sent events) and :mod:`.generation` (its requests → checked jobs) and :mod:`.generation_worker` (jobs → answers), page.html; the
``serve`` verb is :mod:`polymodal.cli.serve`.
See docs/SERVING.md.
Needs the ``serve`` extra (``pip install 'polymodal[serve]'``); importing this package does not.
"""

from .limits import RequestError, ServeError, ServeLimits, ServeSettings, check_bind, is_loopback

__all__ = ["RequestError", "ServeError", "ServeLimits", "ServeSettings", "check_bind", "create_app", "is_loopback",
           "run_server"]


def __getattr__(name: str):
    # FastAPI is optional: import it only when the app is asked for.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "run_server":
        from .server import run_server

        return run_server
    raise AttributeError(name)
