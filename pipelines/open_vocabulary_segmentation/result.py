"""SAM results: PaddleX's ``{input_path, page_index, prompts, masks, mask_infos: [{label, prompt}]}``.

``prompts`` is ``{"box_prompt": [...]}`` or ``{"point_prompt": [...]}`` and each
``mask_infos`` entry names its prompt (chained mode adds ``source``: the detection the
box came from). Masks are full-frame COCO RLE in JSON. ``invalid_prompts`` (only when
some prompt left the image) lists the prompts that were not segmented, and why.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..results.draw import color_for, overlay_masks
from ..results.masks import MaskResult
from ..results.records import ObjectRecord, compact_json, mask_columns, optional_float


class SamSegResult(MaskResult):
    def render(self) -> np.ndarray:
        image = overlay_masks(super().render(), list(self.data.get("masks", [])))
        thickness = max(1, round(min(image.shape[:2]) / 300))
        for i, info in enumerate(self.data.get("mask_infos", [])):
            color = color_for(i)
            p = [int(round(v)) for v in info["prompt"]]
            if info["label"] == "box_prompt":
                cv2.rectangle(image, (p[0], p[1]), (p[2], p[3]), color, thickness)
            else:
                cv2.circle(image, (p[0], p[1]), 3 * thickness, (255, 255, 255), -1)
                cv2.circle(image, (p[0], p[1]), 3 * thickness, color, thickness)
        return image

    def object_records(self) -> list[ObjectRecord]:
        """One record per mask: its prompt, the box of the mask, and (chained) the detection it came from."""
        out = []
        for rle, info in zip(self.rles, self.data.get("mask_infos", [])):
            source = info.get("source") or {}
            prompt_type = str(info["label"]).removesuffix("_prompt")
            out.append(
                ObjectRecord(
                    cls_id=None if source.get("cls_id") is None else int(source["cls_id"]),
                    label=source.get("label", info["label"]),
                    score=optional_float(source.get("score")),
                    prompt_type=prompt_type,
                    prompt=compact_json(info["prompt"]),
                    **mask_columns(rle, with_box=True),
                )
            )
        return out
