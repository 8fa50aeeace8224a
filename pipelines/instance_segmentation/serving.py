"""``/instance-segmentation``: PaddleX's instance segmentation endpoint.

Each instance's mask is ``{rleResult, size: [h, w]}``: the COCO compressed-RLE counts of the
mask on the full image, the same RLE as the ``objects`` table's mask columns.
"""

from __future__ import annotations

from typing import Any, Optional

from ..serving import ImageRequest, ServingContext, floats, parse


class InstanceSegmentationRequest(ImageRequest):
    threshold: Optional[float] = None


def instances(result: Any) -> list[dict[str, Any]]:
    """``instances``: ``{bbox, categoryId, categoryName, score, mask {rleResult, size}}`` per instance."""
    rles = result.rles
    out = []
    for i, b in enumerate(result.data.get("boxes", [])):
        rle = rles[i] if i < len(rles) else None
        out.append({
            "bbox": floats(b["coordinate"]), "categoryId": int(b["cls_id"]), "categoryName": str(b.get("label") or ""),
            "score": float(b["score"]),
            "mask": None if rle is None else {"rleResult": rle["counts"], "size": [int(rle["size"][0]), int(rle["size"][1])]},
        })
    return out


async def handle(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``{image, threshold?, visualize?}`` -> ``{instances, image}``."""
    req = parse(InstanceSegmentationRequest, body)
    res = await ctx.infer(req.image, {} if req.threshold is None else {"threshold": req.threshold},
                          visualize=req.visualize)
    return {"instances": instances(res), "image": await ctx.picture(res, req.visualize)}
