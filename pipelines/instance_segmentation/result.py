"""Instance-segmentation results: PaddleX's ``{input_path, page_index, boxes, masks}``.

``masks`` holds boolean ``[N, H, W]`` arrays on the full image frame; JSON
carries them as COCO RLE (``{size: [h, w], counts: str}``) of the full frame,
not PaddleX's box crops, so every mask decodes in place on its own.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from ..ops.masks import RLE, encode_rles, rle_to_columns
from ..results import BaseResult
from ..results.draw import draw_boxes, overlay_masks


class MaskResult(BaseResult):
    """A result with ``data["masks"]`` (bool ``[N, H, W]``): RLE in JSON, Parquet column dicts on demand."""

    @cached_property
    def rles(self) -> list[RLE]:
        masks = self.data.get("masks")
        return encode_rles(np.asarray(masks)) if masks is not None and len(masks) else []

    def mask_columns(self) -> list[dict[str, Any]]:
        """``{mask_counts, mask_height, mask_width}`` per mask, for ``objects`` rows."""
        return [rle_to_columns(r) for r in self.rles]

    def _json_body(self) -> dict[str, Any]:
        body = dict(self.data)
        body["masks"] = self.rles
        return body


class InstanceSegResult(MaskResult):
    def render(self) -> np.ndarray:
        image = overlay_masks(super().render(), list(self.data.get("masks", [])))
        return draw_boxes(image, self.data.get("boxes", []))
