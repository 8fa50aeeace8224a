"""``instance_segmentation``: Mask-RT-DETR, MaskRCNN, Cascade-MaskRCNN, SOLOv2, PP-YOLOE_seg exports.

The detection pipeline with masks: same config shape, thresholds, batching and
preprocessing (inherited), a model that also returns masks, a result with RLE.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..base import BasePipeline, Prepared
from ..object_detection.pipeline import ObjectDetectionPipeline
from .model import InstanceSegModel
from .result import InstanceSegResult


class InstanceSegmentationPipeline(ObjectDetectionPipeline):
    """Config section ``SubModules.InstanceSegmentation``; ``predict(input, threshold=...)``."""

    pipeline_name = "instance_segmentation"
    submodule = "InstanceSegmentation"

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        BasePipeline.__init__(self, config, device)  # not the detection __init__: it would load a DetectionModel
        sub = (config.get("SubModules") or {}).get(self.submodule)
        if not sub:
            raise ValueError(f"config has no SubModules.{self.submodule} section")
        self.model = InstanceSegModel.from_submodule(sub, config.get("Pxflow") or {}, self.device)

    def run_batch(self, batch: Sequence[Prepared], threshold=None, **kwargs: Any) -> list[InstanceSegResult]:
        raws = self.model.infer([p.payload for p in batch])
        results = []
        for p, raw in zip(batch, raws):
            h, w = p.image.shape[:2]
            boxes, masks = self.model.postprocess_instances(raw, w, h, threshold)
            data = {"input_path": p.item.uri, "page_index": None, "boxes": boxes, "masks": masks}
            results.append(InstanceSegResult(data, p.image, p.index))
        return results
