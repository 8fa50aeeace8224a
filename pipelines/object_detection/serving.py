"""``/object-detection``: PaddleX's object detection endpoint (the request and response are shared with
small object detection: :mod:`pxflow.pipelines.results.serving`)."""

from __future__ import annotations

from typing import Any

from ..results.serving import serve_detection
from ..serving import ServingContext


async def handle(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``{image, threshold?, visualize?}`` -> ``{detectedObjects, image}``."""
    return await serve_detection(ctx, body)
