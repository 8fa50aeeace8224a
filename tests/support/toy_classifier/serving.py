"""The toy's PaddleX serving endpoint, ``/image-classification``: written outside pxflow, like the rest of the toy.

Request ``{image, visualize?}``; result ``{categories: [{id, name, score}], image}`` as PaddleX's
image classification app answers. The server does the rest (envelope, limits, batching).
"""

from __future__ import annotations

from typing import Any

from pxflow.pipelines.serving import ImageRequest, ServingContext, parse


async def handle(ctx: ServingContext, body: Any) -> dict[str, Any]:
    req = parse(ImageRequest, body)
    res = await ctx.infer(req.image, {}, visualize=req.visualize)
    categories = [{"id": int(c), "name": str(n), "score": float(s)}
                  for c, n, s in zip(res.data["class_ids"], res.data["label_names"], res.data["scores"])]
    return {"categories": categories, "image": await ctx.picture(res, req.visualize)}
