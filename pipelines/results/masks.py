"""Results that carry full-frame masks (instance segmentation, SAM): RLE in JSON and in records.

``data["masks"]`` holds boolean ``[N, H, W]`` arrays on the full image frame; JSON
carries them as COCO RLE (``{size: [h, w], counts: str}``) of the full frame, not
PaddleX's box crops, so every mask decodes in place on its own.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..ops.masks import RLE, encode_rles
from .base import BaseResult


class MaskResult(BaseResult):
    """A result with ``data["masks"]``: encoded to RLE once, on first use."""

    @cached_property
    def rles(self) -> list[RLE]:
        masks = self.data.get("masks")
        return encode_rles(np.asarray(masks)) if masks is not None and len(masks) else []

    def _json_body(self):
        body = dict(self.data)
        body["masks"] = self.rles
        return body
