"""``object_detection``: PicoDet, PP-YOLOE+, RT-DETR ... exports, as PaddleX runs them."""

from __future__ import annotations

from typing import Any, Sequence

from ..base import Prepared, SinglePredictorPipeline
from ..ops.boxes import parse_threshold
from ..results.detection import DetResult


class ObjectDetectionPipeline(SinglePredictorPipeline):
    """Config section ``SubModules.ObjectDetection``; ``predict(input, threshold=...)``."""

    pipeline_name = "object_detection"
    result_class = DetResult
    submodules = {"ObjectDetection": "object_detection"}
    primary_submodule = "ObjectDetection"
    default_module = "object_detection"

    def validate_kwargs(self, threshold=None, **kwargs: Any) -> dict[str, Any]:
        return {"threshold": parse_threshold(threshold), **kwargs}

    def run_batch(self, batch: Sequence[Prepared], threshold=None, **kwargs: Any) -> list[DetResult]:
        raws = self.model.infer([p.payload for p in batch])
        return [
            DetResult.of(p, self.model.postprocess(raw, p.image.shape[1], p.image.shape[0], threshold))
            for p, raw in zip(batch, raws)
        ]
