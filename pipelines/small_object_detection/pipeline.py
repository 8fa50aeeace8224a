"""``small_object_detection`` (PP-YOLOE+_SOD ...): detection, plus sliced inference when configured.

Config ``SubModules.SmallObjectDetection`` as PaddleX; ``Pxflow.slice:
{size, overlap, nms_iou, include_full}`` switches slicing on (PaddleX has no
slicing). Tiles are cut and preprocessed in the loader threads; the model sees
the tiles of a batch of images together.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..base import Prepared, SinglePredictorPipeline
from ..io.inputs import InputItem
from ..ops.boxes import clip_boxes, filter_by_threshold, parse_threshold
from ..results.detection import DetResult
from .slicing import SliceConfig, drop_cut_boxes, merge_tile_boxes, tile_windows


class SmallObjectDetectionPipeline(SinglePredictorPipeline):
    pipeline_name = "small_object_detection"
    result_class = DetResult
    submodules = {"SmallObjectDetection": "small_object_detection"}
    primary_submodule = "SmallObjectDetection"
    default_module = "small_object_detection"

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        self.slice = SliceConfig.from_config(self.settings.slice)

    def validate_kwargs(self, threshold=None, **kwargs: Any) -> dict[str, Any]:
        return {"threshold": parse_threshold(threshold), **kwargs}

    def prepare(self, image: np.ndarray, item: InputItem, **kwargs: Any):
        """The whole image's sample, or ``[(window, sample), ...]`` for every tile when slicing."""
        if self.slice is None:
            return self.model.preprocess(image)
        h, w = image.shape[:2]
        windows = tile_windows(h, w, self.slice)
        if self.slice.include_full and len(windows) > 1:
            windows = [(0, 0, w, h)] + windows
        return [(win, self.model.preprocess(image[win[1] : win[3], win[0] : win[2]])) for win in windows]

    def run_batch(self, batch: Sequence[Prepared], threshold=None, **kwargs: Any) -> list[DetResult]:
        if self.slice is None:
            raws = self.model.infer([p.payload for p in batch])
            return [DetResult.of(p, self.model.postprocess(raw, p.image.shape[1], p.image.shape[0], threshold)) for p, raw in zip(batch, raws)]
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
            results.append(DetResult.of(p, self.model.postprocess(merged, w, h, threshold=0.0)))  # already thresholded per tile (scores > thr >= 0)
        return results
