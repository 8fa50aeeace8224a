"""PP-ShiTuV2 results: ``{input_path, boxes: [{labels, rec_scores, det_score, coordinate}]}`` as PaddleX."""

from __future__ import annotations

import numpy as np

from ..results import BaseResult
from ..results.draw import draw_boxes


class ShiTuResult(BaseResult):
    """Each box is drawn with its best match (or the detector score when nothing matched)."""

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
