"""Drawing helpers shared by every result type (boxes, labels, mask overlays)."""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np


def color_for(index: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour for a class or instance index."""
    hue = (int(index) * 47) % 180
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_boxes(image: np.ndarray, boxes: Iterable[dict]) -> np.ndarray:
    """Draw ``{cls_id, label, score, coordinate}`` boxes with a caption, in place; returns the image."""
    h, w = image.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    font_scale = max(0.4, min(h, w) / 1000)
    for box in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in box["coordinate"])
        color = color_for(box.get("cls_id", 0))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        caption = f"{box.get('label', '')} {float(box.get('score', 0)):.2f}".strip()
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - th - base if y1 - th - base >= 0 else y1
        cv2.rectangle(image, (x1, ty), (x1 + tw, ty + th + base), color, -1)
        cv2.putText(image, caption, (x1, ty + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def overlay_masks(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Blend each boolean ``H x W`` mask onto ``image`` in its own colour, in place; returns the image."""
    for i, mask in enumerate(masks):
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            continue
        color = np.array(color_for(i), dtype=np.float32)
        region = image[m].astype(np.float32)
        image[m] = (region * (1 - alpha) + color * alpha).astype(np.uint8)
    return image
