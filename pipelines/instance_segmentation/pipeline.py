"""``instance_segmentation``: Mask-RT-DETR, MaskRCNN, Cascade-MaskRCNN, SOLOv2, PP-YOLOE_seg exports.

Detection's config shape, thresholds, batching and preprocessing, with a predictor that
also returns masks and a result that carries them as full-frame RLE.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..base import Prepared, SinglePredictorPipeline
from ..ops.boxes import parse_threshold
from .result import InstanceSegResult


class InstanceSegmentationPipeline(SinglePredictorPipeline):
    """Config section ``SubModules.InstanceSegmentation``; ``predict(input, threshold=...)``."""

    pipeline_name = "instance_segmentation"
    result_class = InstanceSegResult
    submodules = {"InstanceSegmentation": "instance_segmentation"}
    primary_submodule = "InstanceSegmentation"
    default_module = "instance_segmentation"

    def validate_kwargs(self, threshold=None, **kwargs: Any) -> dict[str, Any]:
        return {"threshold": parse_threshold(threshold), **kwargs}

    def run_batch(self, batch: Sequence[Prepared], threshold=None, **kwargs: Any) -> list[InstanceSegResult]:
        raws = self.model.infer([p.payload for p in batch])
        results = []
        for p, raw in zip(batch, raws):
            h, w = p.image.shape[:2]
            boxes, masks = self.model.postprocess_instances(raw, w, h, threshold)
            data = {"input_path": p.item.uri, "page_index": None, "boxes": boxes, "masks": masks}
            results.append(InstanceSegResult(data, p.image, p.index))
        return results
