"""Detection postprocessing shared by every backend and pipeline.

Rows are ``[cls_id, score, x1, y1, x2, y2]`` in original-image pixels, the
layout of Paddle's ``multiclass_nms3`` and of every PaddleX detector export.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import cv2
import numpy as np

Threshold = Union[float, Mapping[int, float]]
#: PaddleX applies this to classes a per-class threshold dict does not name.
DEFAULT_CLASS_THRESHOLD = 0.5


def split_by_counts(boxes: np.ndarray, counts: np.ndarray | None, batch: int) -> list[np.ndarray]:
    """Cut the concatenated ``[N, 6+]`` output into one array per image.

    With one image per call all rows belong to it: some ONNX exports report a
    bogus count there (the shared PicoDet ONNX says 2125 for 100 rows).
    """
    boxes = np.asarray(boxes).reshape(-1, np.asarray(boxes).shape[-1]) if np.asarray(boxes).size else np.zeros((0, 6), np.float32)
    if batch == 1:
        return [boxes]
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    if counts.shape[0] != batch or int(counts.sum()) != boxes.shape[0]:
        raise ValueError(f"box counts {counts.tolist()} do not match {boxes.shape[0]} rows for batch {batch}")
    return np.split(boxes, np.cumsum(counts)[:-1])


def filter_by_threshold(boxes: np.ndarray, threshold: Threshold) -> np.ndarray:
    """Keep rows with ``score > threshold`` (per class for a dict) and drop padding rows (class -1)."""
    if boxes.size == 0:
        return boxes.reshape(0, boxes.shape[-1] if boxes.ndim == 2 else 6)
    cls = boxes[:, 0]
    if isinstance(threshold, Mapping):
        per_row = np.array([threshold.get(int(c), DEFAULT_CLASS_THRESHOLD) for c in cls], dtype=np.float64)
    else:
        per_row = float(threshold)
    return boxes[(boxes[:, 1] > per_row) & (cls > -1)]


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip coordinates to the image and drop boxes left with no area (as PaddleX does)."""
    if boxes.size == 0:
        return boxes
    out = boxes.copy()
    out[:, 2] = np.maximum(out[:, 2], 0)
    out[:, 3] = np.maximum(out[:, 3], 0)
    out[:, 4] = np.minimum(out[:, 4], width)
    out[:, 5] = np.minimum(out[:, 5], height)
    return out[(out[:, 4] > out[:, 2]) & (out[:, 5] > out[:, 3])]


def class_aware_nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Non-maximum suppression per class (OpenCV's batched NMS), highest score first."""
    if len(boxes) <= 1:
        return boxes
    xywh = np.stack([boxes[:, 2], boxes[:, 3], boxes[:, 4] - boxes[:, 2], boxes[:, 5] - boxes[:, 3]], 1)
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.astype(np.float64).tolist(), boxes[:, 1].astype(float).tolist(), boxes[:, 0].astype(int).tolist(), -1.0, float(iou_threshold)
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    order = keep[np.argsort(-boxes[keep, 1], kind="stable")]
    return boxes[order]


def label_for(cls_id: int, labels: Sequence[str]) -> str:
    """The class name, or a stable placeholder when the model's label list is short or wrong."""
    return labels[cls_id] if 0 <= cls_id < len(labels) else f"class_{cls_id}"


def _threshold_value(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # NaN fails this too
        raise ValueError(f"{what} must be in [0, 1], got {value!r}")
    return number


def _class_id(key) -> int:
    if isinstance(key, bool):
        raise ValueError(f"threshold dict keys are class ids (non-negative integers), got {key!r}")
    if isinstance(key, (int, np.integer)):
        cls_id = int(key)
    elif isinstance(key, str) and key.strip().isdigit():
        cls_id = int(key.strip())
    elif isinstance(key, (float, np.floating)) and float(key).is_integer():
        cls_id = int(key)
    else:
        raise ValueError(f"threshold dict keys are class ids (non-negative integers), got {key!r}")
    if cls_id < 0:
        raise ValueError(f"threshold dict keys are class ids (non-negative integers), got {key!r}")
    return cls_id


def parse_threshold(value) -> Threshold | None:
    """Accept a float, a ``{cls_id: float}`` dict (keys may be strings from YAML/JSON) or None.

    Thresholds are scores in [0, 1] (numeric strings are accepted, as from a CLI or YAML);
    anything else is a ``ValueError`` that names the offending value or key.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        out: dict[int, float] = {}
        for key, item in value.items():
            cls_id = _class_id(key)
            out[cls_id] = _threshold_value(item, f"threshold for class {cls_id}")
        return out
    return _threshold_value(value, "threshold")
