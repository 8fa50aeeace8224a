"""Detection results: ``{input_path, page_index, boxes: [{cls_id, label, score, coordinate}]}``.

Shared by every pipeline whose answer is boxes (object_detection, small_object_detection).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import BaseResult
from .draw import draw_boxes
from .records import ObjectRecord, box_columns, optional_float


class DetResult(BaseResult):
    """PaddleX's DetResult: boxes drawn with their label and score; one record per box."""

    @classmethod
    def of(cls, prepared: Any, boxes: list[dict[str, Any]]) -> "DetResult":
        """The result for one prepared input (``pxflow.pipelines.base.Prepared``) and its boxes."""
        data = {"input_path": prepared.item.uri, "page_index": None, "boxes": boxes}
        return cls(data, prepared.image, prepared.index)

    def render(self) -> np.ndarray:
        return draw_boxes(super().render(), self.data.get("boxes", []))

    def object_records(self) -> list[ObjectRecord]:
        return [
            ObjectRecord(
                cls_id=int(box["cls_id"]),
                label=box.get("label"),
                score=optional_float(box.get("score")),
                **box_columns(box["coordinate"]),
            )
            for box in self.data.get("boxes", [])
        ]
