"""The ASGI app of ``pxflow serve``: PaddleX 3.x's serving endpoints over one pxflow pipeline.

Every endpoint runs the pipeline's own ``predict()`` (on a list of decoded arrays, gathered
by :class:`.batching.MicroBatcher`) and builds its response from the result objects, so the
API returns exactly the boxes ``predict()`` and ``annotate`` produce. PP-ShiTu indexes are
versioned indexes under ``index_root`` (:class:`pxflow.pipelines.retrieval.versions.IndexRepo`):
build publishes a new name, add/remove publish new versions through the same compare-and-swap
as the index flows, infer reads CURRENT (or ``name@v000003``); nothing lives only in memory.

Memory: each request is capped (``topk``, prompts, pixels from its image headers) and admitted
into the process's pixel budget before it decodes anything (:mod:`.admission`); ``/metrics``
shows the pixels in flight and the memory bound that follows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pxflow.pipelines.prefetch import max_pixels_in_flight, pixel_budget
from pxflow.pipelines.retrieval.index_data import IndexData
from pxflow.pipelines.retrieval.versions import (
    IndexRepo, NothingToChange, VersionError, check_name, split_spec, version_number,
)

from . import schemas
from .admission import admit_request, check_request, memory_bound, peak_rss_bytes, request_units
from .batching import MicroBatcher, Overloaded
from .limits import ApiError, Limits, decode_checked, image_bytes, image_pixels

log = logging.getLogger("pxflow.serve")

#: pipeline name -> its PaddleX inference endpoint
ENDPOINTS = {
    "object_detection": "/object-detection",
    "small_object_detection": "/small-object-detection",
    "instance_segmentation": "/instance-segmentation",
    "open_vocabulary_segmentation": "/open-vocabulary-segmentation",
    "PP-ShiTuV2": "/shitu-infer",
}
SHITU_INDEX_ENDPOINTS = ("/shitu-index-build", "/shitu-index-add", "/shitu-index-remove")
ERROR_STATUS = {"too_large": 413, "inference_failed": 500}

try:  # orjson comes with Prefect; plain json otherwise
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


def _loads(data: bytes) -> Any:
    return _orjson.loads(data) if _orjson is not None else json.loads(data)


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        if _orjson is not None:
            return _orjson.dumps(content, option=_orjson.OPT_NON_STR_KEYS)
        return super().render(content)


@dataclass
class ServeOptions:
    limits: Limits = field(default_factory=Limits)
    #: draw the visualisation into ``result.image`` (a request's ``visualize`` overrides it)
    visualize: bool = True
    jpeg_quality: int = 90
    max_batch: int = 8
    window_ms: float = 5.0
    #: model calls running at once (per model): 2 overlaps one call's tail with the next call's start
    workers: int = 2
    #: PP-ShiTu: where /shitu-index-build creates indexes (local folder or s3:// prefix)
    index_root: str | None = None
    index_type: str = "Flat"
    metric_type: str = "IP"
    #: run one blank image through the model before /ready answers 200
    warmup: bool = True


def endpoints_for(pipeline_name: str) -> list[str]:
    if pipeline_name not in ENDPOINTS:
        raise ValueError(f"pipeline {pipeline_name!r} has no PaddleX serving endpoint (served: {', '.join(ENDPOINTS)})")
    return [ENDPOINTS[pipeline_name], *(SHITU_INDEX_ENDPOINTS if pipeline_name == "PP-ShiTuV2" else ())]


class _Metrics:
    """Prometheus metrics when ``prometheus_client`` is installed (it comes with Prefect), else nothing."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:  # pragma: no cover
            self.registry = None
            return
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter("pxflow_serve_requests_total", "requests by endpoint and HTTP status",
                                     ["endpoint", "status"], registry=self.registry)
        self.latency = prom.Histogram("pxflow_serve_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                      buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = prom.Histogram("pxflow_serve_batch_size", "images per model call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queued = prom.Gauge("pxflow_serve_queued", "requests waiting for the model", registry=self.registry)
        self.pixels = prom.Gauge("pxflow_serve_pixels_in_flight", "pixel units (decoded BGR pixels) held now by "
                                 "requests and predict() calls", registry=self.registry)
        self.pixels_limit = prom.Gauge("pxflow_serve_pixels_in_flight_limit", "the pixel budget (--max-pixels-in-flight)",
                                       registry=self.registry)
        self.bound = prom.Gauge("pxflow_serve_memory_bound_bytes", "resident memory the server keeps under: "
                                "warm-up peak RSS + 3 bytes x the pixel budget + request bodies", registry=self.registry)
        self.rss = prom.Gauge("pxflow_serve_peak_rss_bytes", "peak resident memory of the process so far",
                              registry=self.registry)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        if self.registry is not None:
            self.requests.labels(endpoint, str(status)).inc()
            self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST


def _jpeg_base64(result, quality: int) -> str:
    ok, buf = cv2.imencode(".jpg", result.render(), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding of the visualisation failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def create_app(pipeline: Any, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving ``pipeline`` (a pxflow pipeline object, already built)."""
    options = options or ServeOptions()
    limits = options.limits
    if (max_pixels_in_flight() or 0) != limits.max_pixels_in_flight:
        # predict() sets the process budget's limit from the environment at each call: both must agree
        raise ValueError(f"PXFLOW_MAX_PIXELS_IN_FLIGHT ({max_pixels_in_flight() or 'no limit'}) differs from the "
                         f"server's max_pixels_in_flight ({limits.max_pixels_in_flight}): set it to the same number "
                         "(pxflow serve --max-pixels-in-flight sets both)")
    name = pipeline.pipeline_name
    routes = endpoints_for(name)
    metrics = _Metrics()
    state: dict[str, Any] = {"ready": False, "warmup_error": None, "memory_bound": None}

    def run_batch(key: str, items: list[tuple[np.ndarray, dict[str, Any]]]) -> list[Any]:
        # every item of a batch has the same options (the key is their JSON form)
        arrays, kwargs = [array for array, _ in items], items[0][1]
        out: list[Any] = []
        try:
            results = list(pipeline.predict(arrays, admitted=True, **kwargs))  # the request holds their pixels
        except (ValueError, TypeError, VersionError) as exc:
            raise ApiError(422, str(exc)) from None
        for res in results:
            if res.ok:
                out.append(res)
            else:
                status = ERROR_STATUS.get(res.error_type, 422)
                out.append(ApiError(status, f"{res.error_type}: {res.error_message}"))
        return out

    batcher = MicroBatcher(run_batch, max_batch=options.max_batch, window_ms=options.window_ms, workers=options.workers,
                           max_queue=limits.max_queue, name=name)
    if metrics.registry is not None:
        batcher.on_batch = lambda size, seconds: metrics.batch.observe(size)
    index_ops = asyncio.Semaphore(max(1, options.workers))

    def warm_up() -> None:
        # a full micro-batch of blanks: the runtime's arenas reach their batched size before the baseline is taken
        blank = np.full((64, 64, 3), 127, np.uint8)
        if name == "open_vocabulary_segmentation":
            kinds = [k for k in ("box", "point") if k in getattr(pipeline, "models", {"box": 1})]
            for kind in kinds:
                prompt = [[8, 8, 40, 40]] if kind == "box" else [[20, 20]]
                list(pipeline.predict([blank], prompt_type=kind, prompt=prompt))
        elif name == "PP-ShiTuV2":
            pipeline.feature_dim()
            pipeline.det_model.infer([pipeline.det_model.preprocess(blank)])
        else:
            list(pipeline.predict([blank] * options.max_batch))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import httpx

        state["client"] = httpx.AsyncClient(
            follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(limits.fetch_timeout_s), limits=httpx.Limits(max_connections=64),
        )
        batcher.start()
        if options.warmup:
            try:
                await asyncio.to_thread(warm_up)
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
            await batcher.stop()
            await state["client"].aclose()

    app = FastAPI(title=f"pxflow serve: {name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    # -- envelope and errors ----------------------------------------------------------
    def envelope(status: int, message: str, log_id: str) -> JSONResponse:
        return _Json(schemas.error(status, message, log_id), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return envelope(exc.status_code, str(exc.detail), schemas.new_log_id())

    @app.exception_handler(Exception)
    async def _any_error(request: Request, exc: Exception):  # pragma: no cover - handlers below catch first
        log.exception("unhandled error")
        return envelope(500, f"internal error: {type(exc).__name__}", schemas.new_log_id())

    async def read_json(request: Request) -> Any:
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
            return _loads(b"".join(chunks))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc})") from None

    def route(path: str):
        def register(handler: Callable[[Any, str, AsyncExitStack], Awaitable[dict[str, Any]]]):
            async def endpoint(request: Request):
                log_id = schemas.new_log_id()
                started = time.perf_counter()
                status = 200
                try:
                    # the stack holds the request's pixels until its response is rendered
                    async with AsyncExitStack() as held:
                        payload = await read_json(request)
                        result = await handler(payload, log_id, held)
                        response = _Json(schemas.ok(result, log_id))
                        del result
                except ApiError as exc:
                    status = exc.status
                    response = envelope(exc.status, exc.message, log_id)
                except Overloaded as exc:
                    status = 503
                    response = envelope(503, f"server busy: {exc}", log_id)
                except Exception as exc:  # never a traceback to the client; the log has it
                    status = 500
                    log.exception("logId %s: %s failed", log_id, path)
                    response = envelope(500, f"internal error ({type(exc).__name__}: {exc}); logId {log_id}", log_id)
                metrics.observe(path, status, time.perf_counter() - started)
                return response

            app.add_api_route(path, endpoint, methods=["POST"], name=path.strip("/"))
            return handler

        return register

    async def admit(held: AsyncExitStack, pixels: list[int], *, visualize: bool = False, prompts: int = 0) -> None:
        """Check the request's caps and hold its pixel units (until ``held`` closes) before anything is decoded."""
        units = request_units(pixels, visualize=visualize, prompts=prompts)
        check_request(pixels, units, limits)
        held.callback((await admit_request(units, limits)).close)

    def visualizing(visualize: bool | None) -> bool:
        return options.visualize if visualize is None else bool(visualize)

    async def infer_one(image: Any, kwargs: dict[str, Any], held: AsyncExitStack, *, visualize: bool | None,
                        prompts: int = 0):
        """Size from the header, admit, decode (announced to the batcher, so concurrent requests share a call), predict."""
        with batcher.announce() as announcement:
            data = await image_bytes(image, limits, state["client"])
            await admit(held, [image_pixels(data, limits)], visualize=visualizing(visualize), prompts=prompts)
            array = await asyncio.to_thread(decode_checked, data, limits)
            del data
            announcement.done()
            key = json.dumps(kwargs, sort_keys=True, default=str)
            try:
                return await asyncio.wait_for(batcher.submit(key, (array, kwargs)), limits.request_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"inference did not finish within {limits.request_timeout_s:g} s") from None

    async def picture(result, visualize: bool | None) -> str | None:
        if not visualizing(visualize):
            return None
        return await asyncio.to_thread(_jpeg_base64, result, options.jpeg_quality)

    # -- detection, instance segmentation, SAM ----------------------------------------
    # the endpoints of one image and an optional threshold: (request schema, result key, result -> JSON)
    thresholded = {
        "object_detection": (schemas.DetectionRequest, "detectedObjects", schemas.detected_objects),
        "small_object_detection": (schemas.DetectionRequest, "detectedObjects", schemas.detected_objects),
        "instance_segmentation": (schemas.InstanceSegmentationRequest, "instances", schemas.instances),
    }
    if name in thresholded:
        request_schema, result_key, to_json = thresholded[name]

        @route(ENDPOINTS[name])
        async def _thresholded(payload, log_id, held):
            req = schemas.parse(request_schema, payload)
            res = await infer_one(req.image, {} if req.threshold is None else {"threshold": req.threshold}, held,
                                  visualize=req.visualize)
            return {result_key: to_json(res), "image": await picture(res, req.visualize)}

    if name == "open_vocabulary_segmentation":
        @route(ENDPOINTS[name])
        async def _sam(payload, log_id, held):
            req = schemas.parse(schemas.OpenVocabularySegmentationRequest, payload)
            if not req.prompt:
                raise ApiError(422, "prompt: needs at least one prompt ([[x1, y1, x2, y2], ...] or [[x, y], ...])")
            if len(req.prompt) > limits.max_prompts:
                raise ApiError(413, f"prompt: {len(req.prompt)} prompts, over the limit of {limits.max_prompts} per request "
                                    "(each is a full-image mask; raise it with --max-prompts)")
            res = await infer_one(req.image, {"prompt_type": req.kind, "prompt": req.prompt}, held,
                                  visualize=req.visualize, prompts=len(req.prompt))
            masks, infos = schemas.sam_masks(res)
            # PaddleX's schema module names the list mask_infos, its documents maskInfos: both are sent
            return {"masks": masks, "maskInfos": infos, "mask_infos": infos, "image": await picture(res, req.visualize)}

    # -- PP-ShiTuV2 ---------------------------------------------------------------------
    if name == "PP-ShiTuV2":
        def repo_for(key: str, *, allow_version: bool) -> tuple[IndexRepo, str | None]:
            if not options.index_root:
                raise ApiError(503, "this server was started without --index-root: indexKey cannot be used")
            if not isinstance(key, str) or not key.strip():
                raise ApiError(422, "indexKey: required")
            base, version = split_spec(key.strip())
            if version and not allow_version:
                raise ApiError(422, f"indexKey: {key!r} names a version; add/remove publish on the index name ({base})")
            try:
                repo = IndexRepo(options.index_root, check_name(base))
                if version:
                    version_number(version)
                    if not repo.is_published(version):
                        raise ApiError(404, f"indexKey: index {base!r} has no published version {version}")
                elif repo.current_version() is None:
                    raise ApiError(404, f"indexKey: unknown index {key!r}")
            except VersionError as exc:
                raise ApiError(404 if "no published" in str(exc) else 422, f"indexKey: {exc}") from None
            return repo, version

        def id_map_of(repo: IndexRepo, manifest: dict[str, Any]) -> dict[str, str]:
            data = IndexData.load(repo.version_dir(manifest["version"]), storage=repo.storage)
            return {str(k): str(v) for k, v in sorted(data.id_map.items())}

        async def gallery(pairs, held: AsyncExitStack) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
            if len(pairs) > limits.max_pairs:
                raise ApiError(413, f"imageLabelPairs: {len(pairs)} pairs exceed the limit of {limits.max_pairs}")
            what = [f"imageLabelPairs.{i}.image" for i in range(len(pairs))]
            raw = []
            for i, pair in enumerate(pairs):  # sequential: bounds fetches per request
                raw.append(await image_bytes(pair.image, limits, state["client"], what=what[i]))
            await admit(held, [image_pixels(data, limits, w) for data, w in zip(raw, what)])  # the sum over the pairs
            arrays = [await asyncio.to_thread(decode_checked, data, limits, w) for data, w in zip(raw, what)]
            entries = [{"sha256": hashlib.sha256(data).hexdigest()} for data in raw]
            del raw
            labels = [p.label for p in pairs]
            async with index_ops:
                features, kept, skipped = await asyncio.to_thread(pipeline.embed_gallery, arrays, labels)
            if skipped:
                raise ApiError(422, f"imageLabelPairs: {skipped[0]['error_type']}: {skipped[0]['message']}")
            return features, kept, entries

        async def publish(fn, *args, **kwargs) -> dict[str, Any]:
            try:
                async with index_ops:
                    return await asyncio.to_thread(fn, *args, **kwargs)
            except NothingToChange as exc:
                raise ApiError(422, str(exc)) from None
            except VersionError as exc:
                raise ApiError(409, str(exc)) from None

        @route("/shitu-index-build")
        async def _build(payload, log_id, held):
            req = schemas.parse(schemas.BuildIndexRequest, payload)
            if not options.index_root:
                raise ApiError(503, "this server was started without --index-root: it cannot build indexes")
            features, labels, entries = await gallery(req.imageLabelPairs, held)
            key = "idx-" + uuid.uuid4().hex[:20]
            repo = IndexRepo(options.index_root, key)
            inputs = {"source": "pxflow serve", "logId": log_id, "images": entries}
            # no gallery entries are recorded as consumed: a gallery refresh never removes API images
            manifest = await publish(repo.build, features, labels, [], options.index_type, options.metric_type,
                                     pipeline.rec_model.describe(), inputs)
            return {"indexKey": key, "idMap": await asyncio.to_thread(id_map_of, repo, manifest)}

        @route("/shitu-index-add")
        async def _add(payload, log_id, held):
            req = schemas.parse(schemas.AddImagesToIndexRequest, payload)
            repo, _ = await asyncio.to_thread(repo_for, req.indexKey, allow_version=False)
            features, labels, entries = await gallery(req.imageLabelPairs, held)
            inputs = {"source": "pxflow serve", "logId": log_id, "images": entries, "model": pipeline.rec_model.describe()}
            manifest = await publish(repo.append, features, labels, [], inputs)
            return {"idMap": await asyncio.to_thread(id_map_of, repo, manifest)}

        @route("/shitu-index-remove")
        async def _remove(payload, log_id, held):
            req = schemas.parse(schemas.RemoveImagesFromIndexRequest, payload)
            if not req.ids:
                raise ApiError(422, "ids: needs at least one id to remove")
            repo, _ = await asyncio.to_thread(repo_for, req.indexKey, allow_version=False)
            manifest = await publish(repo.remove, req.ids, None, {"source": "pxflow serve", "logId": log_id})
            return {"idMap": await asyncio.to_thread(id_map_of, repo, manifest)}

        @route("/shitu-infer")
        async def _shitu(payload, log_id, held):
            req = schemas.parse(schemas.ShiTuInferRequest, payload)
            kwargs: dict[str, Any] = {}
            if req.indexKey is not None:
                repo, version = await asyncio.to_thread(repo_for, req.indexKey, allow_version=True)
                kwargs["index"] = repo.base + (f"@{version}" if version else "")
            elif pipeline.index is None:
                raise ApiError(422, "indexKey: required (the server has no default index)")
            if req.detThreshold is not None:
                kwargs["det_threshold"] = req.detThreshold
            if req.recThreshold is not None:
                kwargs["rec_threshold"] = req.recThreshold
            if req.topk is not None:
                if req.topk < 1:
                    raise ApiError(422, "topk must be >= 1")
                if req.topk > limits.max_topk:
                    raise ApiError(422, f"topk: {req.topk} is over the limit of {limits.max_topk} "
                                        "(raise it with --max-topk)")
                kwargs["rec_topk"] = req.topk
            res = await infer_one(req.image, kwargs, held, visualize=req.visualize)
            return {"detectedObjects": schemas.shitu_objects(res), "image": await picture(res, req.visualize)}

    # -- operations -------------------------------------------------------------------
    @app.get("/health")
    async def _health():
        return {"status": "ok", "pipeline": name}

    @app.get("/ready")
    async def _ready():
        body = {"ready": bool(state["ready"]), "pipeline": name, "endpoints": routes,
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

    app.state.batcher = batcher
    app.state.pxflow = state
    return app
