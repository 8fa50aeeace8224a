"""``/small-object-detection``: PaddleX's small object detection endpoint (the request and response are
object detection's, :mod:`pxflow.pipelines.results.serving`; slicing follows the config's ``Pxflow.slice``)."""

from __future__ import annotations

from typing import Any

from ..results.serving import serve_detection
from ..serving import ServingContext


async def handle(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``{image, threshold?, visualize?}`` -> ``{detectedObjects, image}``."""
    return await serve_detection(ctx, body)
