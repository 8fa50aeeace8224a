"""``pxflow serve``: PaddleX 3.x's serving API over pxflow pipelines (FastAPI on uvicorn).

:func:`create_app` builds the ASGI app for one pipeline object, with one route per endpoint of
the pipeline's spec (the handlers live in the pipeline packages, :mod:`pxflow.pipelines.serving`);
:mod:`.limits` holds the production limits (body and pixel size, SSRF-safe URL fetching,
timeouts), :mod:`.batching` the per-model micro-batcher, :mod:`.admission` the per-request pixel
admission into the process pixel budget and the memory bound, :mod:`.envelope` PaddleX's
response envelope. See docs/serving.md.
"""

from .app import ServeOptions, create_app, endpoints_for, serving_routes
from .batching import MicroBatcher, Overloaded
from .limits import ApiError, Limits

__all__ = ["ApiError", "Limits", "MicroBatcher", "Overloaded", "ServeOptions", "create_app", "endpoints_for",
           "serving_routes"]
