"""``/open-vocabulary-segmentation``: PaddleX's SAM endpoint (box or point prompts).

Each mask is ``{rleResult, counts, size: [h, w]}``: PaddleX's schema names the COCO
compressed-RLE counts ``rleResult``, and its document decodes a returned mask with
``pycocotools.mask.decode(mask)``, which reads ``counts`` and ``size``: both are sent.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ..serving import ImageRequest, ServingContext, ServingError, floats, parse


class OpenVocabularySegmentationRequest(ImageRequest):
    prompt: List[List[float]]
    #: ``promptType`` ("box" | "point"); PaddleX's schema module spells it ``prompt_type``: both are accepted
    promptType: Optional[str] = None
    prompt_type: Optional[str] = None

    @property
    def kind(self) -> str:
        kind = self.promptType or self.prompt_type
        if kind not in ("box", "point"):
            raise ServingError(422, f"promptType must be 'box' or 'point', got {kind!r}")
        return kind


def sam_masks(result: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``masks`` (decodable by pycocotools as they are) and ``maskInfos``."""
    masks = []
    for rle in result.rles:
        counts = rle["counts"]
        masks.append({"rleResult": counts, "counts": counts, "size": [int(rle["size"][0]), int(rle["size"][1])]})
    infos = [{"label": str(i["label"]), "prompt": floats(i["prompt"])} for i in result.data.get("mask_infos", [])]
    return masks, infos


async def handle(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``{image, prompt, promptType, visualize?}`` -> ``{masks, maskInfos, mask_infos, image}``."""
    req = parse(OpenVocabularySegmentationRequest, body)
    if not req.prompt:
        raise ServingError(422, "prompt: needs at least one prompt ([[x1, y1, x2, y2], ...] or [[x, y], ...])")
    if len(req.prompt) > ctx.limits.max_prompts:
        raise ServingError(413, f"prompt: {len(req.prompt)} prompts, over the limit of {ctx.limits.max_prompts} per "
                                "request (each is a full-image mask; raise it with --max-prompts)")
    res = await ctx.infer(req.image, {"prompt_type": req.kind, "prompt": req.prompt}, visualize=req.visualize,
                          prompts=len(req.prompt))
    masks, infos = sam_masks(res)
    # PaddleX's schema module names the list mask_infos, its documents maskInfos: both are sent
    return {"masks": masks, "maskInfos": infos, "mask_infos": infos, "image": await ctx.picture(res, req.visualize)}
