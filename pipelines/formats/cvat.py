"""CVAT for images 1.1 XML: pre-annotations out, corrected annotations back.

Export (:func:`annotations_xml`): one ``<image id name width height>`` per image; each object is a
``<box xtl ytl xbr ybr>`` and, with a mask, a ``<mask rle left top width height>``; a box and its mask share
a ``group_id`` (CVAT's own way of saying that shapes are one object), which is how :func:`read_annotations`
pairs them again. ``<meta><task><labels>`` lists the labels, so a project created from the file knows them.
A PDF page is an ``<image>`` named ``doc.pdf#page=N``; the import reads the page back from that name.

CVAT's mask RLE (``cvat/apps/dataset_manager/formats/cvat.py`` and ``transformations.py``,
``MaskConverter``) is not COCO's: run lengths over the mask's tight box (``left``/``top``/``width``/``height``,
inclusive pixels), **row-major**, alternating and starting with a run of unset pixels (0 when the first
pixel is set), written as ``"n, n, n"``.
"""

from __future__ import annotations

from typing import Sequence
from xml.etree import ElementTree as ET

import numpy as np

from pxflow.pipelines.io.pages import split_page
from pxflow.pipelines.ops.masks import decode_rle, encode_rle, mask_to_box, segmentation_to_rle

from .review import FormatError, ReviewImage, ReviewObject


# ---------------------------------------------------------------- mask RLE
def encode_mask(mask: np.ndarray) -> tuple[list[int], int, int, int, int] | None:
    """``(rle, left, top, width, height)`` of a boolean full-frame mask; None when it is empty."""
    mask = np.asarray(mask, dtype=bool)
    box = mask_to_box(mask)
    if box is None:
        return None
    left, top, right, bottom = (int(v) for v in box)
    flat = mask[top:bottom, left:right].ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs, left, top, right - left, bottom - top


def decode_mask(rle: Sequence[int], left: int, top: int, width: int, height: int,
                image_height: int, image_width: int) -> np.ndarray:
    """CVAT mask RLE -> boolean ``image_height x image_width`` mask (a :class:`FormatError` when they disagree)."""
    counts = np.asarray(rle, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != width * height:
        raise FormatError(f"mask RLE covers {int(counts.sum())} pixels, its box {width}x{height} has {width * height}")
    if left < 0 or top < 0 or left + width > image_width or top + height > image_height:
        raise FormatError(f"mask box {left},{top} {width}x{height} leaves the {image_width}x{image_height} image")
    values = (np.arange(counts.size) % 2).astype(bool)
    out = np.zeros((image_height, image_width), dtype=bool)
    out[top:top + height, left:left + width] = np.repeat(values, counts).reshape(height, width)
    return out


# ---------------------------------------------------------------- export
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def annotations_xml(images: Sequence[ReviewImage], labels: Sequence[str], name: str = "pxflow") -> bytes:
    """CVAT for images 1.1 XML of ``images`` (boxes, and masks grouped with their boxes)."""
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    task = _sub(_sub(root, "meta"), "task")
    _sub(task, "name", name)
    _sub(task, "size", str(len(images)))
    _sub(task, "mode", "annotation")
    label_list = _sub(task, "labels")
    for label in labels:
        element = _sub(label_list, "label")
        _sub(element, "name", label)
        _sub(element, "type", "any")
        _sub(element, "attributes")
    group = 0
    for frame, image in enumerate(images):
        element = _sub(root, "image", id=str(frame), name=image.name, width=str(image.width), height=str(image.height))
        for obj in image.objects:
            common = {"label": obj.label, "source": "auto", "occluded": "0"}
            x1, y1, x2, y2 = obj.box
            encoded = encode_mask(decode_rle(obj.rle)) if obj.rle is not None else None
            grouped = {}
            if encoded is not None:
                group += 1
                grouped = {"group_id": str(group)}
            _sub(element, "box", **common, xtl=f"{x1:.2f}", ytl=f"{y1:.2f}", xbr=f"{x2:.2f}", ybr=f"{y2:.2f}",
                 z_order="0", **grouped)
            if encoded is not None:
                rle, left, top, width, height = encoded
                _sub(element, "mask", **common, rle=", ".join(map(str, rle)), left=str(left), top=str(top),
                     width=str(width), height=str(height), z_order="0", **grouped)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


# ---------------------------------------------------------------- import
def _float(element: ET.Element, key: str, where: str) -> float:
    try:
        return float(element.attrib[key])
    except (KeyError, ValueError):
        raise FormatError(f"{where}: <{element.tag}> needs a number in {key!r}") from None


def _shape(element: ET.Element, width: int, height: int, where: str) -> ReviewObject | None:
    label = element.attrib.get("label")
    if not label:
        raise FormatError(f"{where}: <{element.tag}> without a label")
    if element.tag == "box":
        x1, y1, x2, y2 = (_float(element, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        angle = np.deg2rad(float(element.attrib.get("rotation", 0) or 0))
        if angle:  # CVAT rotates about the centre; keep the rotated box's bounds
            cx, cy, c, s = (x1 + x2) / 2, (y1 + y2) / 2, np.cos(angle), np.sin(angle)
            corners = [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c)
                       for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
            x1, x2 = max(0.0, min(p[0] for p in corners)), min(float(width), max(p[0] for p in corners))
            y1, y2 = max(0.0, min(p[1] for p in corners)), min(float(height), max(p[1] for p in corners))
        return ReviewObject(label=label, box=[x1, y1, x2, y2])
    if element.tag == "mask":
        try:
            rle = [int(v) for v in element.attrib["rle"].split(",")]
            box = [int(element.attrib[k]) for k in ("left", "top", "width", "height")]
        except (KeyError, ValueError):
            raise FormatError(f"{where}: <mask> needs rle, left, top, width, height") from None
        mask = decode_mask(rle, *box, height, width)
    elif element.tag == "polygon":
        try:
            points = [float(c) for pair in element.attrib["points"].split(";") for c in pair.split(",")]
        except (KeyError, ValueError):
            raise FormatError(f"{where}: <polygon> needs points x,y;x,y;...") from None
        mask = decode_rle(segmentation_to_rle([points], height, width))
    else:
        return None
    box = mask_to_box(mask)
    return None if box is None else ReviewObject(label=label, box=box, rle=encode_rle(mask))


def read_annotations(data: bytes) -> tuple[list[ReviewImage], dict[str, int]]:
    """CVAT for images 1.1 XML -> every image in it, with its boxes, masks and polygons.

    CVAT exports every image of the task, so an image without shapes is ground truth with no object. A box and
    a mask (or polygon) with the same non-zero ``group_id`` are one object (the box is its box); other shapes
    (polylines, points, tracks of a video task) are counted in ``shapes_skipped``.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise FormatError(f"not XML: {exc}") from None
    if root.tag != "annotations":
        raise FormatError(f"not a CVAT annotations file (root <{root.tag}>, expected <annotations>)")
    images, skipped = [], 0
    for element in root.iter("image"):
        name = element.attrib.get("name")
        where = f"<image id={element.attrib.get('id')!r} name={name!r}>"
        try:
            width, height = int(element.attrib["width"]), int(element.attrib["height"])
        except (KeyError, ValueError):
            raise FormatError(f"{where}: needs width and height") from None
        if not name:
            raise FormatError(f"{where}: needs a name")
        singles: list[ReviewObject] = []
        groups: dict[str, dict[str, ReviewObject]] = {}
        for child in element:
            obj = _shape(child, width, height, where)
            if obj is None:
                if child.tag not in ("attribute", "tag"):
                    skipped += 1
                continue
            group = child.attrib.get("group_id", "0")
            kind = "box" if child.tag == "box" else "mask"
            if group in ("", "0") or kind in groups.get(group, {}):
                singles.append(obj)
            else:
                groups.setdefault(group, {})[kind] = obj
        for parts in groups.values():
            if "box" in parts and "mask" in parts:
                parts["mask"].box, parts["mask"].label = parts["box"].box, parts["box"].label
                singles.append(parts["mask"])
            else:
                singles.extend(parts.values())
        images.append(ReviewImage(name=name, width=width, height=height, objects=singles,
                                  page_index=split_page(name)[1]))
    skipped += sum(1 for _ in root.iter("track"))
    return images, {"images": len(images), "shapes_skipped": int(skipped)}
