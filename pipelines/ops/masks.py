"""Binary masks: bringing model masks onto the image frame, COCO RLE, and the Parquet column form.

Every mask pxflow stores is a COCO *compressed* RLE of the FULL original image
frame (``{"size": [h, w], "counts": str}``), produced by
``pycocotools.mask.encode``. PaddleX's serving layer encodes a crop around the
box instead, which loses where the mask lies; a full-frame RLE decodes to the
right pixels with nothing else, and pycocotools' ``COCOeval(iouType="segm")``
reads it directly.

The Parquet form (:func:`rle_to_columns`) splits an RLE into the three
``objects`` columns ``mask_counts`` (string), ``mask_height``, ``mask_width``;
:func:`columns_to_rle` reverses it bit-exactly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

RLE = dict  # {"size": [h, w], "counts": str}


# -- model output -> boolean frame masks ---------------------------------------------
def binarize(masks: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean masks from a model's mask tensor.

    Integer and boolean outputs (Paddle exports already threshold their masks:
    int32 0/1 for Mask-RT-DETR/MaskRCNN, uint8 for SOLOv2) count as set where
    non-zero; float outputs are probabilities and count where ``> threshold``.
    """
    masks = np.asarray(masks)
    if masks.dtype == np.bool_:
        return masks
    if np.issubdtype(masks.dtype, np.floating):
        return masks > threshold
    return masks != 0


def fit_to_frame(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean ``[N, H, W]`` masks on the ``height x width`` image frame.

    Exports emit masks on the original frame, but a batch pads them to the
    largest image of the batch (crop that off), and ``floor(im_shape /
    scale_factor + 0.5)`` can differ from the true size by a pixel (pad with
    zeros). Anything else is a mask at another resolution: resize it
    (nearest neighbour, so it stays binary).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    n, mh, mw = masks.shape
    if mh >= height and mw >= width:
        return masks[:, :height, :width]
    if height - mh <= 2 and width - mw <= 2:
        out = np.zeros((n, height, width), dtype=bool)
        h, w = min(mh, height), min(mw, width)
        out[:, :h, :w] = masks[:, :h, :w]
        return out
    return np.stack(
        [cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool) for m in masks]
    ) if n else np.zeros((0, height, width), dtype=bool)


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """The pixels whose centres lie in ``[x1, x2) x [y1, y2)`` (a box rasterised on the frame)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xs = np.arange(width) + 0.5
    ys = np.arange(height) + 0.5
    return ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """The tight ``[x1, y1, x2, y2]`` box of a mask (pixel edges), or None for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)]


# -- COCO RLE ----------------------------------------------------------------------------
def _as_str(rle: Mapping[str, Any]) -> RLE:
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _as_bytes(rle: Mapping[str, Any]) -> dict:
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def encode_rle(mask: np.ndarray) -> RLE:
    """One ``H x W`` mask -> ``{"size": [h, w], "counts": str}`` (COCO compressed RLE)."""
    return encode_rles(np.asarray(mask)[None])[0]


def encode_rles(masks: np.ndarray) -> list[RLE]:
    """``[N, H, W]`` masks -> N RLEs, in one pycocotools call (it wants Fortran-ordered ``H x W x N`` uint8)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected [N, H, W] masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    stacked = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False))
    return [_as_str(r) for r in mask_utils.encode(stacked)]


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """An RLE (counts as str or bytes, or an uncompressed list) -> boolean ``H x W`` mask."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_utils.frPyObjects(dict(rle), int(h), int(w))
    return mask_utils.decode(_as_bytes(rle)).astype(bool)


def rle_area(rle: Mapping[str, Any]) -> int:
    return int(mask_utils.area(_as_bytes(rle)))


def rle_box(rle: Mapping[str, Any]) -> list[float]:
    """``[x1, y1, x2, y2]`` of an RLE (pycocotools gives x, y, w, h)."""
    x, y, w, h = (float(v) for v in mask_utils.toBbox(_as_bytes(rle)))
    return [x, y, x + w, y + h]


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """A COCO annotation's ``segmentation`` (polygons, uncompressed or compressed RLE) as one compressed RLE."""
    if isinstance(segmentation, list):  # polygons [[x, y, x, y, ...], ...]
        return _as_str(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)))
    if isinstance(segmentation.get("counts"), list):
        return _as_str(mask_utils.frPyObjects(dict(segmentation), height, width))
    return _as_str(segmentation)


# -- Parquet column form ----------------------------------------------------------------------
def rle_to_columns(rle: Mapping[str, Any]) -> dict[str, Any]:
    """``{mask_counts: str, mask_height: int, mask_width: int}`` for an ``objects`` row."""
    r = _as_str(rle)
    return {"mask_counts": r["counts"], "mask_height": r["size"][0], "mask_width": r["size"][1]}


def columns_to_rle(row: Mapping[str, Any]) -> RLE:
    """Inverse of :func:`rle_to_columns` (any mapping with the three columns)."""
    return {"size": [int(row["mask_height"]), int(row["mask_width"])], "counts": str(row["mask_counts"])}


def columns_to_mask(row: Mapping[str, Any]) -> np.ndarray:
    return decode_rle(columns_to_rle(row))
