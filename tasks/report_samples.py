"""The report's picture grid: which inputs to show, and each one drawn from its table rows.

Pictures are redrawn from the stored rows (``objects``: boxes, labels, scores, mask RLE) on
the re-read input, with the result classes' own ``render()``, so the report shows exactly
what the tables hold, costs no inference, and looks like ``res.save_to_img()``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxflow.pipelines.instance_segmentation.result import InstanceSegResult
from pxflow.pipelines.io.inputs import InputItem
from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.ops.masks import decode_rle
from pxflow.pipelines.results.detection import DetResult

from .report_data import RunData

#: longest side of a drawn sample in the report (pixels)
THUMB_SIZE = 360


@dataclass
class Sample:
    """One picture of the grid: why it was picked, the input, and its drawing (a data URI) or why there is none."""

    reason: str  # "first", "lowest confidence", "error"
    image_uri: str
    caption: str
    data_uri: str | None = None
    problem: str | None = None


def pick_samples(data: RunData, first: int = 12, lowest: int = 6, errors: int = 6) -> list[tuple[str, dict[str, Any]]]:
    """``(reason, images row)``: the first ``first`` ok inputs (by URI), the ``lowest`` inputs whose best
    object has the lowest score, and up to ``errors`` failed inputs; each input at most once."""
    images = data.images.sort_by([("image_uri", "ascending"), ("page_index", "ascending")])
    ok = images.filter(pc.equal(images.column("status"), "ok"))
    picked: list[tuple[str, dict[str, Any]]] = [("first", row) for row in ok.slice(0, first).to_pylist()]
    seen = {(r["image_uri"], r["page_index"]) for _, r in picked}
    scored = data.objects.filter(pc.is_valid(data.objects.column("score")))
    if scored.num_rows and lowest:
        best = scored.group_by("image_uri").aggregate([("score", "max")]).sort_by("score_max")
        by_uri = {r["image_uri"]: r for r in ok.to_pylist()} if ok.num_rows <= 100_000 else None
        added = 0
        for uri in best.column("image_uri").to_pylist():
            if added >= lowest:
                break
            row = by_uri.get(uri) if by_uri is not None else _row_of(ok, uri)
            if row is not None and (row["image_uri"], row["page_index"]) not in seen:
                picked.append(("lowest confidence", row))
                seen.add((row["image_uri"], row["page_index"]))
                added += 1
    failed = images.filter(pc.equal(images.column("status"), "error")).slice(0, errors)
    picked += [("error", row) for row in failed.to_pylist()]
    return picked


def _row_of(table: pa.Table, uri: str) -> dict[str, Any] | None:
    rows = table.filter(pc.equal(table.column("image_uri"), uri)).slice(0, 1).to_pylist()
    return rows[0] if rows else None


def result_for(image: np.ndarray, rows: list[dict[str, Any]], longest: int = THUMB_SIZE) -> DetResult:
    """The result class that draws these ``objects`` rows (instance masks when any row has one, else boxes) on
    ``image`` scaled to ``longest`` pixels: drawn at the size it is shown, so captions stay legible."""
    h, w = image.shape[:2]
    image, scale = fit(image, longest)
    size = (image.shape[1], image.shape[0])
    boxes, masks = [], []
    for row in sorted(rows, key=lambda r: r["object_index"]):
        if row["x1"] is not None:
            box: dict[str, Any] = {"label": row["label"] or "", "score": row["score"] or 0.0,
                                   "coordinate": [row[k] * scale for k in ("x1", "y1", "x2", "y2")]}
            if row["cls_id"] is not None:
                box["cls_id"] = row["cls_id"]
            boxes.append(box)
        if row.get("mask_counts") and (row["mask_height"], row["mask_width"]) == (h, w):  # full-frame RLE
            mask = decode_rle({"size": [row["mask_height"], row["mask_width"]], "counts": row["mask_counts"]})
            masks.append(cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool))
    data = {"input_path": None, "page_index": None, "boxes": boxes}
    if masks:
        return InstanceSegResult({**data, "masks": masks}, image)
    return DetResult(data, image)


def fit(image: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk to at most ``longest`` pixels on its longest side, and the scale applied."""
    h, w = image.shape[:2]
    scale = min(1.0, longest / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return image, scale


def data_uri(image: np.ndarray, longest: int = THUMB_SIZE) -> str:
    """A BGR image scaled to ``longest`` pixels on its longest side, as a JPEG ``data:`` URI."""
    image, _ = fit(image, longest)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 82])
    if not ok:
        raise ValueError("cannot encode a sample as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def draw_samples(data: RunData, storage: Storage, picked: list[tuple[str, dict[str, Any]]]) -> list[Sample]:
    """Each picked input re-read and drawn with its rows; an input that cannot be read now says why."""
    uris = sorted({row["image_uri"] for _, row in picked})
    objects = data.objects.filter(pc.is_in(data.objects.column("image_uri"), pa.array(uris, pa.string())))
    by_page: dict[tuple[str, int | None], list[dict[str, Any]]] = {}  # a PDF's pages share its image_uri
    for row in objects.to_pylist():
        by_page.setdefault((row["image_uri"], row.get("page_index")), []).append(row)
    out = []
    for reason, row in picked:
        uri = row["image_uri"]
        if row["status"] == "error":
            out.append(Sample(reason, uri, f"{row['error_type']}: {row['error_message'] or ''}",
                              problem=row["error_type"] or "error"))
            continue
        rows = by_page.get((uri, row["page_index"]), [])
        best = max((r["score"] for r in rows if r["score"] is not None), default=None)
        caption = f"{len(rows)} object(s)" + (f", best score {best:.2f}" if best is not None else "")
        item = InputItem(uri, storage=storage, page_index=row["page_index"])
        try:
            image = item.load()
        except Exception as exc:  # deleted or unreadable since the run: the report still shows the rest
            out.append(Sample(reason, uri, caption, problem=f"cannot re-read the input now: {exc}"))
            continue
        if row["etag"] and item.meta.get("etag") != row["etag"]:  # its rows describe other pixels: never draw them
            out.append(Sample(reason, uri, caption, problem="the input changed since this run (a later run annotates it)"))
            continue
        out.append(Sample(reason, uri, caption, data_uri=data_uri(result_for(image, rows).render())))
    return out
