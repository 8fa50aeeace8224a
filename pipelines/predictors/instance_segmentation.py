"""The instance-segmentation predictor: a box predictor whose exports also output masks.

Two output layouts exist (PaddleX 3.7.2 ``InstanceSegRunnerPredictor._format_output``):

- boxes layout (Mask-RT-DETR, MaskRCNN, Cascade-MaskRCNN, PP-YOLOE_seg):
  ``boxes [N, 6]`` (class, score, x1, y1, x2, y2 in original pixels), ``counts [B]``,
  ``masks [N, H, W]`` int32 0/1 on the original frame, padded to the batch's largest image;
- SOLOv2 layout: ``bbox_num [1]``, ``cate_label [N]``, ``cate_score [N]``, ``segm [N, H, W]``
  uint8, one image per call; there are no boxes, so we take each mask's tight box
  (PaddleX leaves SOLOv2 results without coordinates).

Thresholds are ``score > threshold`` (per class with a dict) for both layouts,
as for detection; PaddleX keeps SOLOv2 instances at ``>=``.

Some exports only run one image per call (PaddleX's list below; a SOLOv2-layout
answer to a batch is also treated so): batches are then split, never refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..models.backends import batch_sizes
from ..ops.boxes import Threshold, clip_boxes, filter_by_threshold, label_for, parse_threshold, split_by_counts
from ..ops.masks import binarize, fit_to_frame, mask_to_box
from ..ops.preprocess import Sample, to_batch
from .detection import BoxPredictor

#: exports PaddleX runs one image at a time (their graphs mishandle batches)
ONE_IMAGE_MODELS = frozenset(
    {"SOLOv2", "PP-YOLOE_seg-S", "Cascade-MaskRCNN-ResNet50-FPN", "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN"}
)


@dataclass
class RawInstances:
    """One image's model output before thresholding: ``rows [n, 6]`` and ``masks [n, H, W]``."""

    rows: np.ndarray
    masks: np.ndarray
    boxes_from_masks: bool = False  # SOLOv2: rows carry no box


class InstanceSegPredictor(BoxPredictor):
    """Mask-RT-DETR, MaskRCNN, SOLOv2 ... : :meth:`infer` returns each image's rows and masks."""

    module_names = ("instance_segmentation",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.one_image = self.model_name in ONE_IMAGE_MODELS

    def infer(self, samples: Sequence[Sample]) -> list[RawInstances]:
        out: list[RawInstances] = []
        start = 0
        limit = 1 if self.one_image else self.backend.max_batch
        for size in batch_sizes(len(samples), self.batch_size, limit):
            chunk = samples[start : start + size]
            start += size
            outputs = self.backend.run(to_batch(chunk))
            if len(outputs) == 4 and len(chunk) > 1:  # SOLOv2 layout only describes one image
                self.one_image = True
                for one in chunk:
                    out.extend(self._split(self.backend.run(to_batch([one])), 1))
                continue
            out.extend(self._split(outputs, len(chunk)))
        return out

    @staticmethod
    def _split(outputs: list[np.ndarray], batch: int) -> list[RawInstances]:
        if len(outputs) == 4:
            return [_solo_instances(outputs)]
        if len(outputs) != 3:
            raise ValueError(
                f"instance segmentation expects 3 outputs (boxes, counts, masks) or SOLOv2's 4, got {len(outputs)}: "
                "is this a detection model without masks?"
            )
        boxes, counts, masks = outputs
        rows = split_by_counts(boxes, counts, batch)
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != sum(len(r) for r in rows):
            raise ValueError(f"mask output {masks.shape} does not match {sum(len(r) for r in rows)} boxes")
        parts = np.split(masks, np.cumsum([len(r) for r in rows])[:-1]) if batch > 1 else [masks]
        return [RawInstances(r, m) for r, m in zip(rows, parts)]

    def postprocess_instances(
        self, raw: RawInstances, width: int, height: int, threshold: Threshold | None = None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Threshold as detection does, clip boxes, bring the kept masks onto the ``height x width`` frame."""
        thr = parse_threshold(threshold)
        thr = self.threshold if thr is None else thr
        rows = np.asarray(raw.rows, dtype=np.float64).reshape(-1, raw.rows.shape[-1] if raw.rows.size else 6)[:, :6]
        indexed = np.hstack([rows, np.arange(len(rows), dtype=np.float64)[:, None]])
        kept = filter_by_threshold(indexed, thr)
        if not raw.boxes_from_masks:
            kept = clip_boxes(kept, width, height)
        keep = kept[:, 6].astype(np.int64)
        masks = fit_to_frame(binarize(raw.masks[keep]) if len(keep) else np.zeros((0, height, width), bool), height, width)
        boxes: list[dict[str, Any]] = []
        out_masks: list[np.ndarray] = []
        for row, mask in zip(kept, masks):
            if raw.boxes_from_masks:
                coordinate = mask_to_box(mask)
                if coordinate is None:  # SOLOv2's padding row or an empty mask: nothing to report
                    continue
            else:
                coordinate = [float(v) for v in row[2:6]]
            boxes.append(
                {
                    "cls_id": int(row[0]),
                    "label": label_for(int(row[0]), self.labels),
                    "score": float(row[1]),
                    "coordinate": coordinate,
                }
            )
            out_masks.append(mask)
        stacked = np.stack(out_masks) if out_masks else np.zeros((0, height, width), dtype=bool)
        return boxes, stacked


def _solo_instances(outputs: list[np.ndarray]) -> RawInstances:
    """SOLOv2: ``(bbox_num, cate_label, cate_score, segm)``; an image with nothing gives ``-1`` sentinels."""
    _, labels, scores, segm = (np.asarray(o) for o in outputs)
    segm = np.asarray(segm)
    if segm.ndim != 3 or labels.size == 0:
        return RawInstances(np.zeros((0, 6), np.float32), np.zeros((0, 1, 1), np.uint8), True)
    n = labels.reshape(-1).shape[0]
    rows = np.zeros((n, 6), np.float32)
    rows[:, 0] = labels.reshape(-1)
    rows[:, 1] = scores.reshape(-1)[:n]
    return RawInstances(rows, segm[:n], True)
