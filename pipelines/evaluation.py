"""COCO evaluation of pxflow outputs with pycocotools (bbox and segm).

Used by tests, benchmarks and the evaluation entry points, so every place that
claims an mAP computes it the same way: class ids are mapped by index onto the
ground truth's category ids in ascending order (how COCO-trained PaddleDetection
exports number classes), and the image id is taken from the file name stem
(``000000000139.jpg`` -> 139) unless the ground truth lists the file name.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Iterable, Mapping

import numpy as np


def load_coco(gt_json: str):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(gt_json)


def image_id_for(uri: str, coco) -> int:
    """The COCO image id of ``uri``: by file name in the ground truth, else the numeric stem."""
    name = os.path.basename(uri.rstrip("/"))
    by_name = getattr(coco, "_pxflow_by_name", None)
    if by_name is None:
        by_name = {img["file_name"]: img["id"] for img in coco.dataset.get("images", [])}
        coco._pxflow_by_name = by_name
    if name in by_name:
        return int(by_name[name])
    return int(os.path.splitext(name)[0])


def detections_from_boxes(
    records: Iterable[tuple[str, Iterable[Mapping[str, Any]]]], coco
) -> list[dict[str, Any]]:
    """``(image_uri, boxes)`` pairs (PaddleX box dicts) -> COCO detection dicts."""
    categories = sorted(coco.getCatIds())
    out = []
    for uri, boxes in records:
        image_id = image_id_for(uri, coco)
        for box in boxes:
            cls_id = int(box["cls_id"])
            if not 0 <= cls_id < len(categories):
                continue
            x1, y1, x2, y2 = (float(v) for v in box["coordinate"])
            det = {
                "image_id": image_id,
                "category_id": categories[cls_id],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(box["score"]),
            }
            if box.get("segmentation") is not None:
                det["segmentation"] = box["segmentation"]
            out.append(det)
    return out


def coco_eval(coco, detections: list[dict[str, Any]], iou_type: str = "bbox", image_ids: Iterable[int] | None = None) -> np.ndarray:
    """The 12 COCOeval summary stats (``stats[0]`` = AP@[.5:.95], ``stats[1]`` = AP50, ``stats[3]`` = AP small)."""
    from pycocotools.cocoeval import COCOeval

    if not detections:  # pycocotools cannot load an empty result list; nothing detected scores 0
        return np.zeros(12)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(detections)
        ev = COCOeval(coco, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
