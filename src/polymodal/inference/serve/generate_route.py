"""``POST /v1/generate``: text from a generation model, as one JSON answer or as server-sent events.

    curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' \\
         -d '{"prompt": "what color is the square?", "image": "'"$(base64 -w0 scene.png)"'", "max_new_tokens": 16}'
    → {"text": "red", "tokens": 2, "prompt_tokens": 41, "finish_reason": "stop", "timings": {...}}

With ``"stream": true`` the answer is ``text/event-stream``: one ``data: {"text": piece}`` event per decoded piece,
then ``data: {"text": "", "finish_reason": ..., "tokens": ..., "prompt_tokens": ..., "timings": ..., "full_text":
...}``; an error after the stream started is an ``event: error`` with the usual error body. The concatenated
pieces equal the non-streamed answer. Errors found before the stream starts (bad fields, unreadable files,
a full queue, no start within timeout_s) are plain JSON errors with their status, as on every route.

Generation runs on the batching worker, one request at a time (op ``generate``), so the event loop stays free and
``max_queue`` / ``timeout_s`` apply as on the other routes (503 / 504). A request whose client disconnects or
times out is cancelled: its generation stops at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from ...errors import PolymodalError
from .batching import BatcherClosedError, DynamicBatcher, QueueFullError
from .generation import GenerationJob, JobBuilder, parse_request
from .generation_worker import GenerationOutcome
from .limits import RequestError, ServeLimits
from .metrics import ServeMetrics
from .schemas import GenerateRequest, GenerateResponse, GenerateTimings

log = logging.getLogger("polymodal.serve")

POLL_S = 0.25  # how often a waiting non-streamed request checks whether its client is still there
KEEPALIVE_S = 2.0  # an SSE comment after this long without a piece: proxies keep the stream, a gone client shows


class GenerationStream(StreamingResponse):
    """A StreamingResponse that runs ``on_close`` however it ends (finished, client gone, server shutdown)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse(payload: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event (https://html.spec.whatwg.org/multipage/server-sent-events.html): JSON on one line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def add_generate_route(app: FastAPI, *, predictor: Any, builder: JobBuilder | None, batcher: DynamicBatcher,
                       limits: ServeLimits, metrics: ServeMetrics, auth: list[Any], arrival: Callable[[], Any],
                       responses: dict[int | str, dict[str, Any]]) -> None:
    """Mount POST /v1/generate on ``app``. ``builder``: the JobBuilder of a generation model (None for a model of
    another task: the route then answers 400). ``arrival``: the app's context manager of a request on its way to
    the queue (its ``queued()`` is called at submit)."""

    def refuse_other_tasks() -> None:
        if builder is None:
            routes = "POST /v1/predict" + (", /v1/embed" if predictor.can_embed else "")
            raise RequestError(400, "unsupported", f"this {predictor.task_name} model does not generate text: use "
                               f"{routes} (a generation model, e.g. captioning / vqa / transcription / chat, answers "
                               "POST /v1/generate)", None)

    async def read_request(request: Request) -> GenerateRequest:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(415, "unsupported_media_type", f"Content-Type {content_type or '(none)'!r} is not "
                               "accepted: POST /v1/generate takes application/json (files as base64)", "Content-Type")
        return parse_request(await request.body())

    def submit(job: GenerationJob, queued: Any) -> Future:
        try:
            queued.queued()
            job.enqueued = time.perf_counter()  # queue_ms counts from here
            future = batcher.submit("generate", job)
        except QueueFullError as err:
            job.cleanup()
            raise RequestError(503, "overloaded", f"the server is busy: {err}; retry shortly", "queue",
                               {"name": "max_queue", "value": limits.max_queue}, {"Retry-After": "1"}) from err
        except BatcherClosedError as err:
            job.cleanup()
            raise RequestError(503, "shutting_down", str(err), None, None, {"Retry-After": "1"}) from err
        future.add_done_callback(lambda done: _finished(done, job, metrics))
        return future

    def cancel(job: GenerationJob, future: Future) -> None:
        job.cancel.set()  # a running generation stops at its next token
        future.cancel()  # a queued one never starts

    def timeout_error() -> RequestError:
        return RequestError(504, "timeout", f"no answer within timeout_s={limits.timeout_s:g} s (queue "
                            f"{batcher.depth} deep); ask for fewer max_new_tokens, stream the answer, or retry",
                            None, {"name": "timeout_s", "value": limits.timeout_s})

    # the body is read by hand (errors name the field our way); openapi_extra documents it
    @app.post("/v1/generate", response_model=GenerateResponse, dependencies=auth, responses={
        **responses, 200: {"content": {"text/event-stream": {}}, "description": "the answer (JSON), or with "
                           "stream=true server-sent events"}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{GenerateRequest.__name__}"}}}}})
    async def generate(request: Request) -> Any:
        """Text from the model for ``prompt`` (+ ``image`` / ``audio``) or ``messages``, decoded with the saved
        defaults updated by the request's options; ``stream: true`` for server-sent events."""
        refuse_other_tasks()
        assert builder is not None
        with arrival() as queued:
            parsed = await read_request(request)
            job = await run_in_threadpool(builder.build, parsed)
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            if job.stream:
                job.emit = _emitter(loop, events, job)
            future = submit(job, queued)
        request.scope.setdefault("polymodal", {})["batch_size"] = 1
        if job.stream:
            return await _stream(job, future, loop, events, cancel, timeout_error, limits)
        outcome = await _wait(request, job, future, limits.timeout_s, cancel, timeout_error)
        return GenerateResponse(text=outcome.text, tokens=outcome.tokens, prompt_tokens=outcome.prompt_tokens,
                                finish_reason=outcome.finish_reason, timings=GenerateTimings(**outcome.timings))


def _finished(future: Future, job: GenerationJob, metrics: ServeMetrics) -> None:
    job.cleanup()
    if future.cancelled() or future.exception() is not None:
        return
    outcome = future.result().value
    metrics.observe_generation(outcome.finish_reason, outcome.tokens)


def _emitter(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, job: GenerationJob) -> Callable[[str, Any], None]:
    def emit(kind: str, value: Any) -> None:  # on the worker thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
            job.cancel.set()

    return emit


def _error(err: BaseException, job: GenerationJob) -> RequestError:
    """The RequestError of a job that failed on the worker (unreadable file, conversation, too long a prompt)."""
    if isinstance(err, RequestError):
        return err
    if isinstance(err, (PolymodalError, ValueError)):  # DataError, the collator's and the decoder's checks
        return RequestError(422, "invalid_input", job.scrub(str(err)), job.field)
    raise err  # a bug: the middleware logs it and answers a JSON 500


async def _wait(request: Request, job: GenerationJob, future: Future, timeout: float, cancel: Callable,
                timeout_error: Callable[[], RequestError]) -> GenerationOutcome:
    """The job's outcome; 504 (and the job cancelled) after ``timeout`` s, the job cancelled if the client leaves."""
    waiting = asyncio.wrap_future(future)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise timeout_error()
            done, _ = await asyncio.wait({waiting}, timeout=min(POLL_S, remaining))
            if done:
                break
            if await request.is_disconnected():
                raise ClientDisconnect()
    except BaseException:
        cancel(job, future)
        waiting.add_done_callback(_consume)
        raise
    if waiting.cancelled():
        raise timeout_error()
    err = waiting.exception()
    if err is not None:
        raise _error(err, job) from err
    return waiting.result().value


def _consume(waiting: asyncio.Future) -> None:
    if not waiting.cancelled():
        waiting.exception()  # retrieved: no "exception was never retrieved" warning for an abandoned job


async def _stream(job: GenerationJob, future: Future, loop: asyncio.AbstractEventLoop, events: asyncio.Queue,
                  cancel: Callable, timeout_error: Callable[[], RequestError], limits: ServeLimits) -> GenerationStream:
    """Wait (up to timeout_s) for the job to start decoding, so that errors before it still get their status,
    then stream its pieces."""
    future.add_done_callback(lambda done: _emitter(loop, events, job)("end", done))
    try:
        kind, value = await asyncio.wait_for(events.get(), timeout=limits.timeout_s)
    except BaseException as err:
        cancel(job, future)
        if isinstance(err, asyncio.TimeoutError):
            raise timeout_error() from err
        raise
    if kind == "end":  # failed (or cancelled) before decoding started
        if value.cancelled():
            raise timeout_error()
        if value.exception() is not None:
            raise _error(value.exception(), job) from value.exception()
        events.put_nowait((kind, value))

    async def body() -> AsyncIterator[str]:
        while True:
            try:
                kind, value = await asyncio.wait_for(events.get(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"  # an SSE comment: clients ignore it
                continue
            if kind == "text":
                yield sse({"text": value, "finish_reason": None})
            elif kind == "end":
                yield _last_event(value, job)
                return

    return GenerationStream(body(), on_close=lambda: cancel(job, future) if not future.done() else None)


def _last_event(future: Future, job: GenerationJob) -> str:
    if future.cancelled():
        return sse(RequestError(499, "cancelled", "the generation was cancelled").body(), event="error")
    err = future.exception()
    if err is not None:
        try:
            refusal = _error(err, job)
        except BaseException:  # noqa: BLE001 - a bug mid-stream: logged here, a generic message to the client
            log.error("generation failed mid-stream", exc_info=err)
            refusal = RequestError(500, "internal_error", "internal server error; the server log has the details")
        return sse(refusal.body(), event="error")
    outcome: GenerationOutcome = future.result().value
    return sse({"text": "", "finish_reason": outcome.finish_reason, "tokens": outcome.tokens,
                "prompt_tokens": outcome.prompt_tokens, "timings": outcome.timings, "full_text": outcome.text})


__all__ = ["GenerationStream", "add_generate_route", "sse"]
