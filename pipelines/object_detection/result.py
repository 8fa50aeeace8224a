"""Detection results: ``{input_path, page_index, boxes: [{cls_id, label, score, coordinate}]}``."""

from __future__ import annotations

import numpy as np

from ..results import BaseResult
from ..results.draw import draw_boxes


class DetResult(BaseResult):
    """PaddleX's DetResult: boxes drawn with their label and score."""

    def render(self) -> np.ndarray:
        return draw_boxes(super().render(), self.data.get("boxes", []))
