"""PP-ShiTuV2 results: ``{input_path, boxes: [{labels, rec_scores, det_score, coordinate}]}`` as PaddleX."""

from __future__ import annotations

import numpy as np

from ..results import BaseResult
from ..results.draw import draw_boxes
from ..results.records import ObjectRecord, box_columns, optional_float


class ShiTuResult(BaseResult):
    """Each box is drawn with its best match (or the detector score when nothing matched).

    ``index_name`` / ``index_version`` say which index the labels came from; they are
    attributes, not JSON keys, so ``predict()`` output stays PaddleX's.
    """

    def __init__(
        self, data: dict, image: np.ndarray | None = None, index: int = 0,
        index_name: str | None = None, index_version: str | None = None,
    ) -> None:
        super().__init__(data, image, index)
        self.index_name, self.index_version = index_name, index_version

    def render(self) -> np.ndarray:
        boxes = []
        for i, box in enumerate(self.data.get("boxes", [])):
            label, score = box["labels"][0], box["rec_scores"][0]
            boxes.append(
                {
                    "cls_id": i,
                    "label": label if label is not None else "?",
                    "score": score if score is not None else box["det_score"],
                    "coordinate": box["coordinate"],
                }
            )
        return draw_boxes(super().render(), boxes)

    def object_records(self) -> list[ObjectRecord]:
        """One record per detected box: the top-1 match as ``label``/``rec_label``, the detector's score."""
        out = []
        for box in self.data.get("boxes", []):
            labels, scores = box.get("labels") or [None], box.get("rec_scores") or [None]
            top = None if labels[0] is None else str(labels[0])
            out.append(
                ObjectRecord(
                    cls_id=None,
                    label=top,
                    score=optional_float(box.get("det_score")),
                    rec_label=top,
                    rec_score=optional_float(scores[0]),
                    index_name=self.index_name,
                    index_version=self.index_version,
                    **box_columns(box["coordinate"]),
                )
            )
        return out
