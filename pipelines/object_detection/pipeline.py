"""``object_detection``: PicoDet, PP-YOLOE+, RT-DETR ... exports, as PaddleX runs them."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..base import BasePipeline, Prepared
from ..ops.boxes import parse_threshold
from .model import DetectionModel
from .result import DetResult


class ObjectDetectionPipeline(BasePipeline):
    """Config section ``SubModules.ObjectDetection``; ``predict(input, threshold=...)``."""

    pipeline_name = "object_detection"
    submodule = "ObjectDetection"

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        sub = (config.get("SubModules") or {}).get(self.submodule)
        if not sub:
            raise ValueError(f"config has no SubModules.{self.submodule} section")
        self.model = DetectionModel.from_submodule(sub, config.get("Pxflow") or {}, self.device)

    @property
    def batch_size(self) -> int:
        return self.model.batch_size

    def validate_kwargs(self, threshold=None, **kwargs: Any) -> dict[str, Any]:
        return {"threshold": parse_threshold(threshold), **kwargs}

    def prepare(self, image: np.ndarray, **kwargs: Any):
        return self.model.preprocess(image)

    def run_batch(self, batch: Sequence[Prepared], threshold=None, **kwargs: Any) -> list[DetResult]:
        raws = self.model.infer([p.payload for p in batch])
        return [
            DetResult(
                {
                    "input_path": p.item.uri,
                    "page_index": None,
                    "boxes": self.model.postprocess(raw, p.image.shape[1], p.image.shape[0], threshold),
                },
                p.image,
                p.index,
            )
            for p, raw in zip(batch, raws)
        ]
