"""Instance-segmentation results: PaddleX's ``{input_path, page_index, boxes, masks}``; masks as full-frame RLE."""

from __future__ import annotations

import numpy as np

from ..results.draw import draw_boxes, overlay_masks
from ..results.masks import MaskResult
from ..results.records import ObjectRecord, box_columns, mask_columns, optional_float


class InstanceSegResult(MaskResult):
    """One record per instance: its box, class and score, and its mask's RLE columns."""

    def render(self) -> np.ndarray:
        image = overlay_masks(super().render(), list(self.data.get("masks", [])))
        return draw_boxes(image, self.data.get("boxes", []))

    def object_records(self) -> list[ObjectRecord]:
        rles = self.rles
        return [
            ObjectRecord(
                cls_id=int(box["cls_id"]),
                label=box.get("label"),
                score=optional_float(box.get("score")),
                **box_columns(box["coordinate"]),
                **mask_columns(rles[i] if i < len(rles) else None),
            )
            for i, box in enumerate(self.data.get("boxes", []))
        ]
