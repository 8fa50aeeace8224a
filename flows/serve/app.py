"""The ASGI app of ``pxflow serve``: PaddleX 3.x's serving endpoints over one pxflow pipeline.

The app keeps only what every pipeline shares: PaddleX's envelope (:mod:`.envelope`), the body,
image and pixel limits (:mod:`.limits`, :mod:`.admission`), micro-batching (:mod:`.batching`),
metrics and the operations routes (``/health``, ``/ready``, ``/metrics``). The endpoints come
from the served pipeline's spec: one ``POST`` route per
:class:`~pxflow.pipelines.spec.Endpoint` of ``pipeline_spec(name).endpoints``, answered by the
endpoint's handler with a :class:`.context.RequestContext`
(:mod:`pxflow.pipelines.serving`). Every handler runs the pipeline's own ``predict()`` (on
arrays gathered by the batcher), so the API returns exactly what ``predict()`` and
``annotate`` produce; nothing here knows a pipeline by name.

Memory: each request is capped (pixels from its image headers, and what its handler checks:
``topk``, prompts, pairs) and admitted into the process's pixel budget before it decodes
anything (:mod:`.admission`); ``/metrics`` shows the pixels in flight and the memory bound
that follows.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pxflow.pipelines.prefetch import max_pixels_in_flight, pixel_budget
from pxflow.pipelines.registry import pipeline_spec
from pxflow.pipelines.spec import Endpoint, resolve

from .admission import memory_bound, peak_rss_bytes
from .batching import MicroBatcher, Overloaded
from .context import RequestContext, Shared
from .envelope import Json, error_response, loads, new_log_id, ok
from .limits import ApiError, Limits
from .metrics import Metrics
from .options import ServeOptions

log = logging.getLogger("pxflow.serve")

#: a failed result's ``error_type`` -> the HTTP status it is answered with (any other: 422)
ERROR_STATUS = {"too_large": 413, "inference_failed": 500}

Handler = Callable[[RequestContext, Any], Awaitable[dict[str, Any]]]


def serving_routes(pipeline_name: str) -> list[tuple[str, Handler]]:
    """``(path, handler)`` for each endpoint the pipeline's spec declares, handlers loaded and checked.

    A ``ValueError`` naming why when the spec declares none or a handler cannot be used, so that
    ``pxflow serve`` refuses the pipeline in one line before any model loads.
    """
    endpoints = tuple(pipeline_spec(pipeline_name).endpoints)
    if not endpoints:
        raise ValueError(f"pipeline {pipeline_name!r} declares no serving endpoints (its PipelineSpec.endpoints is "
                         "empty): pxflow serve has nothing to answer with")
    return [(ep.path, _handler(ep)) for ep in endpoints]


def endpoints_for(pipeline_name: str) -> list[str]:
    """The paths ``pxflow serve`` answers for ``pipeline_name`` (``ValueError`` when there are none)."""
    return [path for path, _ in serving_routes(pipeline_name)]


def _handler(endpoint: Endpoint) -> Handler:
    try:
        handler = resolve(endpoint.handler)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"the serving handler of {endpoint.path} ({endpoint.handler!r}) cannot be loaded: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not inspect.iscoroutinefunction(handler):
        raise ValueError(f"the serving handler of {endpoint.path} ({endpoint.handler!r}) must be an async function "
                         "handle(ctx, body) -> dict")
    return handler


def _check_budget(limits: Limits) -> None:
    if (max_pixels_in_flight() or 0) != limits.max_pixels_in_flight:
        # predict() sets the process budget's limit from the environment at each call: both must agree
        raise ValueError(f"PXFLOW_MAX_PIXELS_IN_FLIGHT ({max_pixels_in_flight() or 'no limit'}) differs from the "
                         f"server's max_pixels_in_flight ({limits.max_pixels_in_flight}): set it to the same number "
                         "(pxflow serve --max-pixels-in-flight sets both)")


def _batcher(pipeline: Any, options: ServeOptions, metrics: Metrics) -> MicroBatcher:
    """The micro-batcher: one ``predict(arrays, **kwargs)`` per batch of requests with the same options."""

    def run_batch(key: str, items: list[tuple[np.ndarray, dict[str, Any]]]) -> list[Any]:
        arrays, kwargs = [array for array, _ in items], items[0][1]  # a batch shares its key: the same options
        try:
            results = list(pipeline.predict(arrays, admitted=True, **kwargs))  # the request holds their pixels
        except (ValueError, TypeError) as exc:
            raise ApiError(422, str(exc)) from None
        return [res if res.ok else ApiError(ERROR_STATUS.get(res.error_type, 422), f"{res.error_type}: {res.error_message}")
                for res in results]

    batcher = MicroBatcher(run_batch, max_batch=options.max_batch, window_ms=options.window_ms, workers=options.workers,
                           max_queue=options.limits.max_queue, name=pipeline.pipeline_name)
    if metrics.registry is not None:
        batcher.on_batch = lambda size, seconds: metrics.batch.observe(size)
    return batcher


def _lifespan(shared: Shared, state: dict[str, Any]):
    """Start: the URL client, the batcher, the warm-up and the memory bound measured after it. Stop: both closed."""
    limits, options = shared.limits, shared.options

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import httpx

        shared.client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(limits.fetch_timeout_s), limits=httpx.Limits(max_connections=64),
        )
        shared.batcher.start()
        if options.warmup:
            try:  # a full micro-batch: the runtime's arenas reach their batched size before the baseline is taken
                await asyncio.to_thread(shared.pipeline.warm_up, options.max_batch)
            except Exception as exc:  # the server still answers /health; /ready says why it is not ready
                state["warmup_error"] = f"{type(exc).__name__}: {exc}"
                log.error("warm-up failed: %s", state["warmup_error"])
        state["ready"] = state["warmup_error"] is None
        # what the model costs (weights, arenas, libraries) is measured, the rest follows from the limits
        state["memory_bound"] = memory_bound(peak_rss_bytes(), limits)
        log.info("memory bound %.0f MB (pixel budget %d, bodies %d x %d bytes)", state["memory_bound"] / 2**20,
                 limits.max_pixels_in_flight, limits.max_concurrency, limits.max_body_bytes)
        try:
            yield
        finally:
            await shared.batcher.stop()
            await shared.client.aclose()

    return lifespan


def _install_error_envelope(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), new_log_id())

    @app.exception_handler(Exception)
    async def _any_error(request: Request, exc: Exception):  # pragma: no cover - the routes catch first
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}", new_log_id())


async def read_json(request: Request, limits: Limits) -> Any:
    """The request's JSON body, read within the body limit and the time limit (400/408/413 otherwise)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limits.max_body_bytes} bytes")
    chunks, total = [], 0
    try:
        async with asyncio.timeout(max(30.0, limits.fetch_timeout_s)):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limits.max_body_bytes:
                    raise ApiError(413, f"request body exceeds the limit of {limits.max_body_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "the request body was not received in time") from None
    if not total:
        raise ApiError(400, "empty request body: send a JSON object")
    try:
        return loads(b"".join(chunks))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from None


def _add_endpoint(app: FastAPI, path: str, handler: Handler, shared: Shared, metrics: Metrics) -> None:
    """``POST path``: body -> ``handler(ctx, body)`` -> PaddleX's envelope; errors become the failure envelope."""

    async def endpoint(request: Request):
        log_id = new_log_id()
        started = time.perf_counter()
        status = 200
        try:
            # the stack holds the request's pixels until its response is rendered
            async with AsyncExitStack() as held:
                payload = await read_json(request, shared.limits)
                result = await handler(RequestContext(shared, log_id, held), payload)
                response = Json(ok(result, log_id))
                del result
        except ApiError as exc:
            status = exc.status
            response = error_response(exc.status, exc.message, log_id)
        except Overloaded as exc:
            status = 503
            response = error_response(503, f"server busy: {exc}", log_id)
        except Exception as exc:  # never a traceback to the client; the log has it
            status = 500
            log.exception("logId %s: %s failed", log_id, path)
            response = error_response(500, f"internal error ({type(exc).__name__}: {exc}); logId {log_id}", log_id)
        metrics.observe(path, status, time.perf_counter() - started)
        return response

    app.add_api_route(path, endpoint, methods=["POST"], name=path.strip("/"))


def _add_operations(app: FastAPI, shared: Shared, state: dict[str, Any], metrics: Metrics, paths: list[str]) -> None:
    name, batcher, limits = shared.pipeline.pipeline_name, shared.batcher, shared.limits

    @app.get("/health")
    async def _health():
        return {"status": "ok", "pipeline": name}

    @app.get("/ready")
    async def _ready():
        body = {"ready": bool(state["ready"]), "pipeline": name, "endpoints": paths,
                "queued": batcher.queued, "busy": batcher.busy, "workers": batcher.workers}
        if state["warmup_error"]:
            body["error"] = state["warmup_error"]
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    if metrics.registry is not None:
        @app.get("/metrics")
        async def _metrics():
            metrics.queued.set(batcher.queued)
            metrics.pixels.set(pixel_budget().in_flight)
            metrics.pixels_limit.set(limits.max_pixels_in_flight)
            metrics.rss.set(peak_rss_bytes())
            if state["memory_bound"] is not None:
                metrics.bound.set(state["memory_bound"])
            data, content_type = metrics.render()
            return Response(data, media_type=content_type)


def create_app(pipeline: Any, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving ``pipeline`` (a pxflow pipeline object, already built) on its spec's endpoints."""
    options = options or ServeOptions()
    _check_budget(options.limits)
    routes = serving_routes(pipeline.pipeline_name)
    metrics = Metrics()
    shared = Shared(pipeline, options, _batcher(pipeline, options, metrics), asyncio.Semaphore(max(1, options.workers)))
    state: dict[str, Any] = {"ready": False, "warmup_error": None, "memory_bound": None}
    app = FastAPI(title=f"pxflow serve: {pipeline.pipeline_name}", lifespan=_lifespan(shared, state),
                  docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_envelope(app)
    for path, handler in routes:
        _add_endpoint(app, path, handler, shared, metrics)
    _add_operations(app, shared, state, metrics, [path for path, _ in routes])
    app.state.batcher = shared.batcher
    app.state.pxflow = state
    return app
