"""The FastAPI app: routes, auth, error bodies, access log and metrics around a Predictor and its batcher.

    app = create_app(Predictor("runs/x"), ServeSettings(max_batch=16), index=EmbeddingIndex.load("runs/x/index"))

Routes (OpenAPI at ``/docs``): ``GET /`` (the web page), ``GET /health``, ``GET /v1/model``,
``POST /v1/predict``, ``POST /v1/embed``, ``POST /v1/retrieve``, ``POST /v1/generate`` (generation models:
:mod:`.generate_route`), ``GET /metrics``. A route the model's task cannot answer is a 400 naming the routes it
does answer. With an API key set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY`` (401
otherwise); the page, ``/health`` and the docs stay open.

Every error is JSON, ``{"error": {"status", "code", "message", "field", "limit"}}`` (:class:`~.limits.RequestError`);
an unexpected exception gives a 500 with a generic message and its traceback goes to the server log only.
Every request writes one JSON line to the ``polymodal.serve.access`` logger: method, route, status, latency,
batch size.
"""

from __future__ import annotations

import asyncio
import hmac
import platform
from importlib import resources
from typing import Any

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ... import __version__
from ...errors import PolymodalError
from ...tasks.predictions import PredictionError
from ..predictor import NonFiniteModelError, Predictor
from .batching import BatcherClosedError, DynamicBatcher, QueueFullError
from .engine import ModelRunner
from .generate_route import add_generate_route
from .generation import JobBuilder
from .inputs import InputSpec, PreparedSample, RawField, fields_from_json
from .limits import RequestError, ServeSettings
from .metrics import ServeMetrics
from .middleware import BodyTooLarge, ServeMiddleware, error_response
from .schemas import (
    EmbedResponse,
    ErrorResponse,
    GenerateRequest,
    HealthResponse,
    IndexInfo,
    InputsRequest,
    ModalityInfo,
    ModelInfo,
    PredictResponse,
    RetrievedItem,
    RetrieveRequest,
    RetrieveResponse,
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in (
        (401, "missing or wrong bearer token"), (413, "request body over max_body_bytes"),
        (400, "a route this model's task does not answer"), (415, "a body type the route does not take"),
        (422, "invalid, corrupt or over-limit input, unknown modality"), (503, "queue full (max_queue)"),
        (504, "no result within timeout_s"))
}


def _body_doc(model: type, kinds: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI requestBody for a route that reads JSON or multipart itself: both content types, the multipart
    one with a part per modality of this model (so /docs shows a file picker per image / audio modality)."""
    parts: dict[str, Any] = {
        name: ({"type": "string", "format": "binary"} if kind != "text" else {"type": "string"})
        for name, kind in kinds.items()
    }
    parts.update(extra or {})
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": parts}},
    }}}


def create_app(predictor: Predictor, settings: ServeSettings | None = None, index: Any = None,
               index_info: dict[str, Any] | None = None, tmp_root: str | None = None) -> FastAPI:
    """The HTTP app serving ``predictor`` (and ``index``, an EmbeddingIndex, on /v1/retrieve).

    Starts the batching worker thread now; app shutdown (lifespan) stops it. Raises ServeError for settings
    that cannot work (e.g. an index whose width differs from the model's embeddings).
    """
    settings = settings or ServeSettings()
    limits = settings.limits
    assert limits is not None
    spec = InputSpec(predictor, limits, tmp_root)
    runner = ModelRunner(predictor)
    metrics_box: dict[str, ServeMetrics] = {}
    # requests admitted to a model route and not yet queued (their bodies are being read and checked): the
    # batcher waits for them only; changed on the event loop thread only, read by the worker
    on_the_way = {"count": 0}

    class Arrival:
        """One request on its way to the queue, from its arrival at a model route until ``queued()``."""

        def __enter__(self) -> Arrival:
            self.pending = True
            on_the_way["count"] += 1
            return self

        def queued(self, refused: bool = False) -> None:
            if self.pending:
                self.pending = False
                on_the_way["count"] -= 1
                if refused:
                    batcher.notify()  # a waiting batch need not wait for this one any more

        def __exit__(self, *exc: Any) -> None:
            self.queued(refused=True)
    batcher = DynamicBatcher(runner.run, settings.max_batch, settings.max_wait_ms, limits.max_queue,
                             on_batch=lambda op, size, seconds: metrics_box["m"].observe_batch(op, size, seconds),
                             incoming=lambda: on_the_way["count"], op_max_batch={"generate": 1})
    metrics = ServeMetrics(lambda: batcher.depth)
    metrics_box["m"] = metrics
    model = predictor.model
    task = predictor.task_name  # the model's recorded task ("classification", "alignment"): what routes it answers
    builder = JobBuilder(predictor.generator, spec, limits, tmp_root) if predictor.generates else None
    if predictor.generates:
        routes = ["/v1/generate"]
    else:
        routes = ["/v1/predict"] + (["/v1/embed"] if predictor.can_embed else [])
        routes += ["/v1/retrieve"] if index is not None else []
    kinds = spec.kinds

    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="polymodal", version=__version__, lifespan=lifespan,
                  description=f"Serving a polymodal {task} model ({', '.join(f'{n}: {k}' for n, k in kinds.items())}). "
                  + ("POST /v1/generate takes JSON: a prompt or messages, base64 attachments, decoding options; "
                     "stream=true answers with server-sent events." if predictor.generates else
                     "Inputs go as multipart/form-data (a file per image / audio modality, a field per text modality) "
                     "or as JSON with base64 file data."))
    app.state.batcher, app.state.metrics, app.state.spec = batcher, metrics, spec
    app.add_middleware(ServeMiddleware, max_body_bytes=limits.max_body_bytes, metrics=metrics)
    bearer = HTTPBearer(auto_error=False, description="the server's --api-key")

    def check_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.api_key is None:
            return
        token = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise RequestError(401, "unauthorized", "missing or wrong bearer token: send the header "
                               "'Authorization: Bearer <the server's --api-key>'", "Authorization",
                               headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(check_auth)]

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part not in ("query", "body")) or "request"
        return error_response(422, "invalid_request", f"{where}: {first['msg']}", where)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(err.status_code, codes.get(err.status_code, "http_error"),
                               f"{request.method} {request.url.path}: {err.detail}", headers=err.headers)

    # ------------------------------------------------------------------------------------------ helpers

    async def read_fields(request: Request, model: type[InputsRequest], extra: tuple[str, ...] = ()
                          ) -> tuple[list[RawField], dict[str, str]]:
        """The request's input fields (JSON or multipart) and its non-input members named in ``extra``."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            fields, parsed = fields_from_json(await request.body(), model)
            return fields, {key: str(getattr(parsed, key)) for key in extra}
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):  # the latter: text only
            try:
                form = await request.form(max_files=len(kinds) + 8, max_fields=len(kinds) + 8)
            except (BodyTooLarge, ClientDisconnect):
                raise
            except Exception as err:  # python-multipart / starlette parse errors
                raise RequestError(422, "invalid_multipart", f"the multipart body cannot be parsed: {err}",
                                   "body") from err
            fields: list[RawField] = []
            others: dict[str, str] = {}
            try:
                for key, value in form.multi_items():
                    if key in extra:
                        others[key] = str(value) if isinstance(value, str) else ""
                    elif isinstance(value, str):
                        fields.append(RawField(key, value))
                    else:
                        fields.append(RawField(key, await value.read(), value.filename))
            finally:
                await form.close()
            return fields, others
        raise RequestError(415, "unsupported_media_type", f"Content-Type {content_type or '(none)'!r} is not "
                           "accepted: send multipart/form-data (files, texts) or application/json (base64 files, texts)",
                           "Content-Type")

    async def prepare(fields: list[RawField]) -> PreparedSample:
        return await run_in_threadpool(spec.prepare, fields)

    async def submit(request: Request, op: str, prepared: PreparedSample, arrival: Arrival) -> Any:
        try:
            arrival.queued()
            future = batcher.submit(op, prepared.sample)
        except QueueFullError as err:
            prepared.cleanup()
            raise RequestError(503, "overloaded", f"the server is busy: {err}; retry shortly", "queue",
                               {"name": "max_queue", "value": limits.max_queue}, {"Retry-After": "1"}) from err
        except BatcherClosedError as err:
            prepared.cleanup()
            raise RequestError(503, "shutting_down", str(err), None, None, {"Retry-After": "1"}) from err
        future.add_done_callback(lambda _: prepared.cleanup())  # files live until the worker is done with them
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=limits.timeout_s)
        except asyncio.TimeoutError as err:
            raise RequestError(504, "timeout", f"no result within timeout_s={limits.timeout_s:g} s (queue "
                               f"{batcher.depth} deep); retry, or send less at once", None,
                               {"name": "timeout_s", "value": limits.timeout_s}) from err
        except NonFiniteModelError as err:
            raise RequestError(500, "model_error", prepared.scrub(str(err))) from err
        except (PolymodalError, ValueError) as err:  # DataError, PredictionError, the Predictor's ValueErrors
            field = next((key for name, key in prepared.fields.items() if f"{name}:" in str(err)), None)
            raise RequestError(422, "invalid_input", prepared.scrub(str(err)), field) from err
        request.scope.setdefault("polymodal", {})["batch_size"] = result.batch_size
        return result

    def refuse_what_the_task_cannot_answer(prepared: PreparedSample) -> None:
        """The task's check of the sample (Predictor.check) before it is queued: e.g. an alignment model labels
        image / audio inputs only. 422 naming the refused field and the routes that take it instead."""
        try:
            predictor.check(prepared.sample)
        except ValueError as err:  # PredictionError; a plain ValueError for a sample the spec should have refused
            prepared.cleanup()
            refused = err.modalities if isinstance(err, PredictionError) else []
            fields = [prepared.fields[name] for name in refused if name in prepared.fields]
            hint = ("POST /v1/embed embeds it" + (", POST /v1/retrieve searches a gallery with it"
                                                  if index is not None else "")) if predictor.can_embed else ""
            message = f"{err.reason}: {hint}" if fields and hint else str(err)
            raise RequestError(422, "unsupported_input", prepared.scrub(message),
                               fields[0] if fields else "inputs") from err

    # ------------------------------------------------------------------------------------------- routes

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", queue_depth=batcher.depth)

    @app.get("/metrics", dependencies=auth, response_class=Response, responses={401: ERROR_RESPONSES[401]})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=auth, responses={401: ERROR_RESPONSES[401]})
    async def model_info() -> ModelInfo:
        import fastapi

        index_part = None
        if index is not None:
            index_part = IndexInfo(items=len(index), dim=index.dim, modality=(index_info or {}).get("modality"),
                                   backend=index.backend)
        return ModelInfo(
            task=task, head_task=predictor.head_task, architecture=type(model).__name__,
            modalities=[ModalityInfo(**item) for item in spec.describe()],
            labels=predictor.labels, routes=routes,
            limits={"max_body_bytes": limits.max_body_bytes, "max_image_pixels": limits.max_image_pixels,
                    "max_audio_seconds": limits.max_audio_seconds, "max_text_chars": limits.max_text_chars,
                    "max_new_tokens": limits.max_new_tokens, "max_queue": limits.max_queue,
                    "timeout_s": limits.timeout_s},
            batching={"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
            index=index_part, decoding=builder.defaults() if builder is not None else None,
            auth=settings.api_key is not None,
            versions={"polymodal": __version__, "torch": torch.__version__, "fastapi": fastapi.__version__,
                      "python": platform.python_version()},
        )

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=auth, responses=ERROR_RESPONSES,
              openapi_extra=_body_doc(InputsRequest, kinds))
    async def predict(request: Request) -> PredictResponse:
        """The task's prediction for one sample (any subset of the model's modalities): label + probabilities;
        an alignment model gives the zero-shot label of its image / audio inputs."""
        refuse_generation("/v1/predict")
        with Arrival() as arrival:
            fields, _ = await read_fields(request, InputsRequest)
            prepared = await prepare(fields)
            refuse_what_the_task_cannot_answer(prepared)
            result = await submit(request, "predict", prepared, arrival)
        prediction = result.value
        return PredictResponse(label=prediction.label, probabilities=prediction.probabilities,
                               modalities=prediction.modalities, batch_size=result.batch_size)

    def refuse_generation(route: str) -> None:
        if predictor.generates:
            raise RequestError(400, "unsupported", f"{route} answers classification and alignment models; this is a "
                               f"{task} model, which generates text: use POST /v1/generate with {{\"prompt\": ..., "
                               "\"image\": base64, ...}", None)

    def require_embeddings(route: str) -> None:
        refuse_generation(route)
        if not predictor.can_embed:
            raise RequestError(400, "unsupported", f"{route} needs an alignment model (a shared embedding space); "
                               f"this is a {task} model ({predictor.head_task or 'no embeddings'}): use POST "
                               "/v1/predict", None)

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=auth, responses=ERROR_RESPONSES,
              openapi_extra=_body_doc(InputsRequest, kinds))
    async def embed(request: Request) -> EmbedResponse:
        """Unit-norm embeddings of each given input (alignment models); cosine similarity = dot product."""
        require_embeddings("/v1/embed")
        with Arrival() as arrival:
            fields, _ = await read_fields(request, InputsRequest)
            result = await submit(request, "embed", await prepare(fields), arrival)
        embeddings = {name: vector.tolist() for name, vector in result.value.items()}
        dim = len(next(iter(embeddings.values()))) if embeddings else 0
        return EmbedResponse(embeddings=embeddings, dim=dim, batch_size=result.batch_size)

    @app.post("/v1/retrieve", response_model=RetrieveResponse, dependencies=auth, responses=ERROR_RESPONSES,
              openapi_extra=_body_doc(RetrieveRequest, kinds, {"k": {"type": "integer", "default": 5}}))
    async def retrieve(request: Request) -> RetrieveResponse:
        """The k gallery items of the loaded index nearest to one query input (cosine similarity)."""
        require_embeddings("/v1/retrieve")
        if index is None:
            raise RequestError(400, "unsupported", "no retrieval index is loaded: start the server with "
                               "--index INDEX_DIR (from `polymodal retrieve index`)", None)
        with Arrival() as arrival:
            fields, others = await read_fields(request, RetrieveRequest, extra=("k",))
            k = _parse_k(others.get("k", "5"))
            prepared = await prepare(fields)
            if len(prepared.sample) != 1:
                prepared.cleanup()
                raise RequestError(422, "invalid_input", f"a retrieval query is ONE input; got "
                                   f"{', '.join(map(repr, prepared.fields.values()))}", "inputs")
            query_modality = next(iter(prepared.sample))
            result = await submit(request, "embed", prepared, arrival)
        query = result.value[query_modality]
        scores, rows = await run_in_threadpool(index.search, query.unsqueeze(0), k)
        metadata = index.metadata or [{}] * len(index)
        items = [RetrievedItem(rank=rank, score=float(score), id=index.ids[row], label=_text((metadata[row] or {})
                 .get("label")), source=_text((metadata[row] or {}).get("source")))
                 for rank, (score, row) in enumerate(zip(scores[0].tolist(), rows[0].tolist()), start=1)]
        return RetrieveResponse(query_modality=query_modality, items=items, batch_size=result.batch_size)

    # RetrieveRequest / InputsRequest are read by hand (JSON or multipart): list them in the OpenAPI components
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model_cls in (InputsRequest, RetrieveRequest, GenerateRequest):
                body = model_cls.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model_cls.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    add_generate_route(app, predictor=predictor, builder=builder, batcher=batcher, limits=limits, metrics=metrics,
                       auth=auth, arrival=Arrival, responses=ERROR_RESPONSES)
    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _parse_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= 1000:
        raise RequestError(422, "invalid_request", f"k must be an integer from 1 to 1000, got {text!r}", "k")
    return k


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


__all__ = ["create_app"]
