"""The one in-memory form of a reviewed image, shared by every tool format.

Exporters take :class:`ReviewImage` lists built from a run's ``images``/``objects`` rows
(:func:`review_images`); importers return them from a tool's file. Keeping one form means
each tool's module only translates geometry, and ``import-gt`` stores every tool the same way.
Boxes are ``[x1, y1, x2, y2]`` in original-image pixels; masks are COCO compressed RLE on the full
frame (``{"size": [h, w], "counts": str}``), as in the ``objects`` table. A PDF page is one image, named
``doc.pdf#page=N`` in every tool (:mod:`pxflow.pipelines.io.pages`), so a page's boxes stay on that page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from pxflow.pipelines.io.pages import PageKey, page_key, page_name, page_order
from pxflow.pipelines.ops.masks import RLE, columns_to_rle, rle_box


class FormatError(ValueError):
    """A tool's file that cannot be read as that tool's format (the message names the place)."""


@dataclass
class ReviewObject:
    label: str
    box: list[float] | None = None          # x1, y1, x2, y2 (pixels)
    rle: RLE | None = None                  # full-frame COCO compressed RLE
    score: float | None = None              # the model's score (exports); None for human labels
    category_id: int | None = None          # the source's category id, when it has one (COCO)
    iscrowd: bool = False
    area: float | None = None               # the source's area (COCO), else computed when stored


@dataclass
class ReviewImage:
    name: str                                # the file name as the tool knows it (path below a common folder;
                                             # a PDF page's ends in #page=N)
    width: int | None
    height: int | None
    objects: list[ReviewObject] = field(default_factory=list)
    uri: str | None = None                  # pxflow's image identity, when known (a PDF page: the PDF's)
    ref: str | None = None                  # what the tool loads (Label Studio's data.image)
    page_index: int | None = None           # the PDF page (0-based); None for an ordinary image


def review_images(images: Iterable[Mapping[str, Any]], objects: Iterable[Mapping[str, Any]],
                  names: Mapping[str, str], limit: int | None = None) -> list[ReviewImage]:
    """The decoded (``status = ok``) images of a run with their objects, in URI order, at most ``limit``.

    Images are ``(image_uri, page_index)``: each page of a PDF is one, named ``names[uri]#page=N``, with only its
    own objects. Images that failed have no size, so a tool could not place shapes on them: they are left out.
    An object without a box takes its mask's box; one with neither (PP-ShiTu without detector) is not a shape.
    """
    by_image: dict[PageKey, list[Mapping[str, Any]]] = {}
    for row in objects:
        by_image.setdefault(page_key(row), []).append(row)
    rows = sorted((r for r in images if r.get("status") == "ok" and r.get("width") and r.get("height")), key=page_order)
    if limit is not None:
        rows = rows[:limit]
    out = []
    for row in rows:
        uri, page = page_key(row)
        shapes = []
        for obj in sorted(by_image.get((uri, page), []), key=lambda o: o.get("object_index") or 0):
            rle = columns_to_rle(obj) if obj.get("mask_counts") is not None else None
            box = [obj.get(k) for k in ("x1", "y1", "x2", "y2")]
            box = [float(v) for v in box] if all(v is not None for v in box) else (rle_box(rle) if rle else None)
            if box is None:
                continue
            label = obj.get("label") or (f"class_{obj['cls_id']}" if obj.get("cls_id") is not None else "object")
            score = obj.get("score")
            shapes.append(ReviewObject(label=str(label), box=box, rle=rle, score=None if score is None else float(score)))
        out.append(ReviewImage(name=page_name(names[uri], page), width=int(row["width"]), height=int(row["height"]),
                               objects=shapes, uri=uri, page_index=page))
    return out


def labels_of(images: Sequence[ReviewImage]) -> list[str]:
    """The labels the images use, sorted (a tool's label list)."""
    return sorted({o.label for image in images for o in image.objects})
