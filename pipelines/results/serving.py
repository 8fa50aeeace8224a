"""PaddleX serving JSON of the shared result classes, and the endpoint of every pipeline whose answer is boxes.

Two pipeline packages answer with :class:`~.detection.DetResult` (object_detection,
small_object_detection) and pipelines never import each other, so their request model and
handler live here, beside the result they render; each package's ``serving.handle`` calls
:func:`serve_detection`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from ..serving import ImageRequest, ServingContext, floats, parse


class DetectionRequest(ImageRequest):
    """PaddleX's detection request: ``threshold`` is one float or ``{categoryId: float}``."""

    threshold: Optional[Union[float, Dict[int, float]]] = None


def detected_objects(result: Any) -> list[dict[str, Any]]:
    """``detectedObjects``: ``{bbox [x1, y1, x2, y2], categoryId, categoryName, score}`` per box."""
    return [
        {"bbox": floats(b["coordinate"]), "categoryId": int(b["cls_id"]), "categoryName": str(b.get("label") or ""),
         "score": float(b["score"])}
        for b in result.data.get("boxes", [])
    ]


async def serve_detection(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``/object-detection`` and ``/small-object-detection``: one image, an optional threshold."""
    req = parse(DetectionRequest, body)
    res = await ctx.infer(req.image, {} if req.threshold is None else {"threshold": req.threshold},
                          visualize=req.visualize)
    return {"detectedObjects": detected_objects(res), "image": await ctx.picture(res, req.visualize)}
