"""``pxflow serve``: PaddleX 3.x's serving API over pxflow pipelines (FastAPI on uvicorn).

:func:`create_app` builds the ASGI app for one pipeline object; :mod:`.limits` holds the
production limits (body and pixel size, SSRF-safe URL fetching, timeouts) and
:mod:`.batching` the per-model micro-batcher, :mod:`.admission` the per-request pixel admission
into the process pixel budget and the memory bound. See docs/serving.md.
"""

from .app import ENDPOINTS, ServeOptions, create_app, endpoints_for
from .batching import MicroBatcher, Overloaded
from .limits import ApiError, Limits

__all__ = ["ENDPOINTS", "ApiError", "Limits", "MicroBatcher", "Overloaded", "ServeOptions", "create_app", "endpoints_for"]
