"""``small_object_detection`` (PP-YOLOE+_SOD ...): detection, plus sliced inference when configured.

Config ``SubModules.SmallObjectDetection`` as PaddleX; ``Pxflow.slice:
{size, overlap, nms_iou, include_full}`` switches slicing on (PaddleX has no
slicing). Tiles are cut and preprocessed in the loader threads; the model sees
the tiles of a batch of images together.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..base import Prepared
from ..object_detection.pipeline import ObjectDetectionPipeline
from ..object_detection.result import DetResult
from ..ops.boxes import clip_boxes, filter_by_threshold
from .slicing import SliceConfig, drop_cut_boxes, merge_tile_boxes, tile_windows


class SmallObjectDetectionPipeline(ObjectDetectionPipeline):
    pipeline_name = "small_object_detection"
    submodule = "SmallObjectDetection"

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        self.slice = SliceConfig.from_config((config.get("Pxflow") or {}).get("slice"))

    def prepare(self, image: np.ndarray, **kwargs: Any):
        if self.slice is None:
            return super().prepare(image)
        h, w = image.shape[:2]
        windows = tile_windows(h, w, self.slice)
        if self.slice.include_full and len(windows) > 1:
            windows = [(0, 0, w, h)] + windows
        return [(win, self.model.preprocess(image[win[1] : win[3], win[0] : win[2]])) for win in windows]

    def run_batch(self, batch: Sequence[Prepared], threshold=None, **kwargs: Any) -> list[DetResult]:
        if self.slice is None:
            return super().run_batch(batch, threshold=threshold)
        flat = [sample for p in batch for _, sample in p.payload]
        raws = iter(self.model.infer(flat))
        results = []
        thr = threshold if threshold is not None else self.model.threshold
        for p in batch:
            per_tile, offsets = [], []
            h, w = p.image.shape[:2]
            for window, _ in p.payload:
                x0, y0, x1, y1 = window
                rows = clip_boxes(filter_by_threshold(next(raws)[:, :6], thr), x1 - x0, y1 - y0)
                if window != (0, 0, w, h):
                    rows = drop_cut_boxes(rows, window, w, h)
                per_tile.append(rows)
                offsets.append((x0, y0))
            merged = merge_tile_boxes(per_tile, offsets, self.slice.nms_iou)
            boxes = self.model.postprocess(merged, w, h, threshold=-1.0)  # already thresholded per tile
            results.append(DetResult({"input_path": p.item.uri, "page_index": None, "boxes": boxes}, p.image, p.index))
        return results
