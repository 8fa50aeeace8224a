"""Sliced inference geometry: overlapping tiles that cover an image, and merging their boxes.

A detector that resizes its input to a fixed size (PicoDet: 320x320) shrinks
small objects below what it can see. Running it on overlapping tiles keeps
their pixels; boxes from tiles are shifted back to image coordinates and merged
with class-aware NMS, so an object seen by two tiles is reported once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..ops.boxes import class_aware_nms


@dataclass(frozen=True)
class SliceConfig:
    """Tile size ``(h, w)`` in pixels, overlap as a fraction of the tile, and the merge IoU."""

    height: int
    width: int
    overlap_h: float = 0.25
    overlap_w: float = 0.25
    nms_iou: float = 0.5
    include_full: bool = True

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> "SliceConfig | None":
        if not cfg:
            return None
        size = cfg.get("size", 640)
        size = [size, size] if isinstance(size, (int, float)) else list(size)
        overlap = cfg.get("overlap", 0.25)
        overlap = [overlap, overlap] if isinstance(overlap, (int, float)) else list(overlap)
        if not all(0 <= o < 1 for o in overlap):
            raise ValueError(f"slice overlap must be in [0, 1), got {overlap}")
        if min(size) < 8:
            raise ValueError(f"slice size too small: {size}")
        return cls(
            int(size[0]), int(size[1]), float(overlap[0]), float(overlap[1]),
            float(cfg.get("nms_iou", 0.5)), bool(cfg.get("include_full", True)),
        )


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1 - overlap))))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # last tile flush with the edge: every pixel is covered
    return sorted(set(starts))


def tile_windows(height: int, width: int, cfg: SliceConfig) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` windows covering the image; one window when it fits in a tile."""
    return [
        (x, y, min(x + cfg.width, width), min(y + cfg.height, height))
        for y in _starts(height, cfg.height, cfg.overlap_h)
        for x in _starts(width, cfg.width, cfg.overlap_w)
    ]


def drop_cut_boxes(rows: np.ndarray, window: tuple[int, int, int, int], width: int, height: int, margin: float = 2.0) -> np.ndarray:
    """Drop tile boxes touching a tile edge that is inside the image: those objects are cut.

    Tiles overlap, so an object smaller than the overlap lies whole in some
    tile, and large objects come from the full-image pass; a cut fragment would
    otherwise survive NMS (low IoU with the whole object) as a false positive.
    """
    if len(rows) == 0:
        return rows
    x0, y0, x1, y1 = window
    tw, th = x1 - x0, y1 - y0
    keep = np.ones(len(rows), dtype=bool)
    if x0 > 0:
        keep &= rows[:, 2] > margin
    if y0 > 0:
        keep &= rows[:, 3] > margin
    if x1 < width:
        keep &= rows[:, 4] < tw - margin
    if y1 < height:
        keep &= rows[:, 5] < th - margin
    return rows[keep]


def merge_tile_boxes(per_tile: Sequence[np.ndarray], offsets: Sequence[tuple[int, int]], iou: float) -> np.ndarray:
    """Shift each tile's ``[n,6]`` rows by its ``(x0, y0)`` and suppress duplicates across tiles."""
    shifted = []
    for rows, (x0, y0) in zip(per_tile, offsets):
        if len(rows) == 0:
            continue
        rows = rows[:, :6].astype(np.float32, copy=True)
        rows[:, [2, 4]] += x0
        rows[:, [3, 5]] += y0
        shifted.append(rows)
    if not shifted:
        return np.zeros((0, 6), np.float32)
    return class_aware_nms(np.concatenate(shifted), iou)
