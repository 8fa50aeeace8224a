"""COCO evaluation of pxflow outputs with pycocotools (bbox and segm).

Used by tests, benchmarks and the evaluation entry points, so every place that
claims an mAP computes it the same way: class ids are mapped by index onto the
ground truth's category ids in ascending order (how COCO-trained PaddleDetection
exports number classes), and the image id is taken from the file name stem
(``000000000139.jpg`` -> 139) unless the ground truth lists the file name. A PDF page is its own image,
named ``doc.pdf#page=N`` (:mod:`pxflow.pipelines.io.pages`), matched by that name only.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Iterable, Mapping

import numpy as np

from pxflow.pipelines.io.pages import PageKey, page_fragment, page_key, page_name, page_order, split_page


def load_coco(gt_json: str):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(gt_json)


def image_id_for(uri: str, coco, page_index: int | None = None) -> int:
    """The COCO image id of ``uri`` (page ``page_index`` of a PDF): by file name in the ground truth, else the numeric stem.

    A page's name is ``file#page=N``; it has no numeric-stem fallback, since every page of ``139.pdf`` would
    get id 139: a page the ground truth does not name is a ``ValueError`` (not in the ground truth).
    """
    fragment = page_fragment(page_index)
    name = os.path.basename(uri.rstrip("/")) + fragment
    by_name = getattr(coco, "_pxflow_by_name", None)
    if by_name is None:
        by_name = {img["file_name"]: img["id"] for img in coco.dataset.get("images", [])}
        coco._pxflow_by_name = by_name
    if name in by_name:
        return int(by_name[name])
    by_path = getattr(coco, "_pxflow_by_path", None)
    if by_path is None:  # ground-truth file names with folders ("sub/a.jpg") match the URI's trailing path
        by_path = {k.strip("/"): v for k, v in by_name.items() if "/" in k.strip("/")}
        coco._pxflow_by_path = by_path
    if by_path:
        parts = uri.rstrip("/").split("/")
        for start in range(len(parts) - 1):  # longest trailing path first
            found = by_path.get("/".join(parts[start:]) + fragment)
            if found is not None:
                return int(found)
    if page_index is not None or getattr(coco, "pxflow_match_names_only", False):  # no stem fallback
        raise ValueError(f"{page_name(uri, page_index)} is not in the ground truth")
    return int(os.path.splitext(name)[0])


def detections_from_boxes(
    records: Iterable[tuple[str | PageKey, Iterable[Mapping[str, Any]]]], coco
) -> list[dict[str, Any]]:
    """``(image, boxes)`` pairs (PaddleX box dicts) -> COCO detection dicts.

    ``image`` is an ``image_uri`` or an ``(image_uri, page_index)`` key (:func:`boxes_from_rows`), so a PDF's
    pages get their own ids.
    """
    categories = sorted(coco.getCatIds())
    out = []
    for image, boxes in records:
        uri, page = image if isinstance(image, tuple) else (image, None)
        image_id = image_id_for(uri, coco, page)
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


# ---------------------------------------------------------------------------------------------
# Table rows (``objects`` / ``images``, docs/schema.md) -> COCO results, COCO datasets, metrics.
# The id mapping stays the one above: rows become PaddleX-style box dicts and go through
# :func:`detections_from_boxes` with either the ground truth or a COCO object built from the
# table itself (:func:`table_coco`).

#: names of the 12 COCOeval summary stats, in ``stats`` order
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def stats_dict(stats: Iterable[float]) -> dict[str, float]:
    """COCOeval ``stats`` -> ``{"AP": ..., "AP50": ..., ...}`` (-1 stays -1: no ground truth in that range)."""
    return {name: round(float(v), 6) for name, v in zip(STAT_NAMES, stats)}


def rle_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The COCO RLE (``{"size": [h, w], "counts": str}``) of an ``objects`` row, or None without a mask."""
    counts = row.get("mask_counts")
    if counts is None or row.get("mask_height") is None or row.get("mask_width") is None:
        return None
    return {"size": [int(row["mask_height"]), int(row["mask_width"])], "counts": counts}


def boxes_from_rows(rows: Iterable[Mapping[str, Any]], masks: bool = True, require_mask: bool = False):
    """``objects`` rows -> ``([((image_uri, page_index), [box dicts])], skipped)`` for :func:`detections_from_boxes`.

    Grouped by ``(image_uri, page_index)``: the pages of a PDF share its URI and must not share boxes.

    Rows without a class id or a box (PP-ShiTu, unprompted SAM) cannot be COCO detections and are
    counted in ``skipped``; so are rows without a mask when ``require_mask`` (segm evaluation).
    """
    by_image: dict[PageKey, list[dict[str, Any]]] = {}
    skipped = 0
    for row in rows:
        coords = [row.get(k) for k in ("x1", "y1", "x2", "y2")]
        rle = rle_of(row) if masks or require_mask else None
        if row.get("cls_id") is None or row.get("score") is None or any(v is None for v in coords) or (require_mask and rle is None):
            skipped += 1
            continue
        box = {"cls_id": int(row["cls_id"]), "score": float(row["score"]), "coordinate": coords}
        if rle is not None:
            box["segmentation"] = rle
        by_image.setdefault(page_key(row), []).append(box)
    return list(by_image.items()), skipped


def coco_from_dataset(dataset: Mapping[str, Any]):
    """A pycocotools ``COCO`` over an in-memory dataset dict (no file)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": [], "annotations": [], "categories": [], **dict(dataset)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def relative_names(uris: Iterable[str]) -> dict[str, str]:
    """``uri -> file name``: the path below the URIs' common folder (just the base name when they share one)."""
    uris = list(uris)
    if not uris:
        return {}
    split = [u.rstrip("/").split("/") for u in uris]
    common = 0
    shortest = min(len(parts) for parts in split)
    while common < shortest - 1 and len({parts[common] for parts in split}) == 1:
        common += 1
    return {u: "/".join(parts[common:]) for u, parts in zip(uris, split)}


def table_categories(labels: Mapping[int, str | None]) -> list[dict[str, Any]]:
    """Categories for a table without ground truth: class id ``i`` -> category ``i + 1`` named by its label.

    Every id from 0 to the largest seen gets a category (unseen ones are named ``class_<i>``), so
    :func:`detections_from_boxes`' index mapping gives ``category_id = cls_id + 1``.
    """
    top = max((int(k) for k in labels), default=-1)
    return [{"id": i + 1, "name": labels.get(i) or f"class_{i}", "supercategory": ""} for i in range(top + 1)]


def table_dataset(images: Iterable[Mapping[str, Any]], labels: Mapping[int, str | None], gt=None) -> dict[str, Any]:
    """A COCO dataset dict (no annotations yet) with one image entry per ``images`` row.

    With ground truth ``gt`` the ids and categories are the ground truth's (:func:`image_id_for`);
    without, images are numbered 1.. in URI order and named by their path below the common folder,
    and categories come from the table's labels (:func:`table_categories`). ``width``/``height`` are
    the decoded size (null for inputs that could not be decoded). A PDF page is its own entry, named
    ``name#page=N``.
    """
    rows = sorted(images, key=page_order)
    names = relative_names(dict.fromkeys(r["image_uri"] for r in rows))
    out_images = []
    for number, row in enumerate(rows, 1):
        uri, page = page_key(row)
        image_id = image_id_for(uri, gt, page) if gt is not None else number
        entry = {"id": int(image_id), "file_name": page_name(names[uri], page), "width": row.get("width"), "height": row.get("height")}
        if row.get("status") not in (None, "ok"):
            entry["pxflow_error"] = row.get("error_type")
        out_images.append(entry)
    categories = [dict(c) for c in gt.dataset["categories"]] if gt is not None else table_categories(labels)
    return {
        "info": {"description": "pxflow annotations", "version": "1.0"},
        "licenses": [],
        "images": out_images,
        "annotations": [],
        "categories": categories,
    }


def annotations_from_detections(detections: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """COCO results -> dataset annotations (``id``, ``area``, ``iscrowd`` 0; the score kept as ``score``)."""
    from pycocotools import mask as mask_utils

    out = []
    for number, det in enumerate(detections, 1):
        ann = {"id": number, **det, "iscrowd": 0}
        seg = det.get("segmentation")
        if seg is not None:
            rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
            ann["area"] = float(mask_utils.area(rle))
        else:
            ann["area"] = float(det["bbox"][2] * det["bbox"][3])
        out.append(ann)
    return out


def match_labels(uris: Iterable[str], label_uris: Iterable[str], labels: Iterable[str]) -> dict[str, str]:
    """``table image_uri -> label`` for the URIs a label file lists (same URI; local paths compared resolved)."""
    def key(u: str) -> str:
        return os.path.realpath(u) if "://" not in u else u

    exact = {key(u): lab for u, lab in zip(label_uris, labels)}
    out = {}
    for uri in uris:
        found = exact.get(key(uri))
        if found is not None:
            out[uri] = found
    return out


def recall_at_1(top_labels: Mapping[str, str | None], truth: Mapping[str, str]) -> dict[str, Any]:
    """Top-1 retrieval recall over the images that have a true label.

    ``top_labels``: image -> ``rec_label`` of its highest-scoring box (None: no box / no match);
    an image with a true label but no prediction counts as a miss.
    """
    scored = [u for u in truth if u in top_labels]
    hits = sum(1 for u in scored if top_labels[u] is not None and top_labels[u] == truth[u])
    return {
        "recall@1": round(hits / len(scored), 6) if scored else None,
        "recall_images": len(scored),
        "recall_hits": hits,
    }


def ground_truth_dataset(rows: Iterable[Mapping[str, Any]], labels: Mapping[int, str | None]):
    """A pycocotools ``COCO`` of ``ground_truth`` rows (one import), its classes aligned on a run's class ids.

    Reviewed labels are names, so classes match **by name**: category ``cls_id + 1`` is named by the run's
    label of that class (:func:`table_categories`, the index mapping of :func:`detections_from_boxes`), and a
    ground-truth name the run never predicted gets an id after those. Images are the rows' ``image_uri`` (or
    ``file_name`` when the import could not resolve it) and ``page_index`` (a PDF page is named ``#page=N``),
    matched to the run's images by :func:`image_id_for` without its numeric-stem fallback (these ids are not
    COCO's). A box-only object's region for ``segm`` is its box.
    """
    categories = table_categories(labels)
    by_name: dict[str, int] = {}
    for cls, label in sorted(labels.items()):
        if label is not None:
            by_name.setdefault(label, int(cls) + 1)
    images: dict[PageKey, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    for row in rows:
        page = row.get("page_index")  # an import older than the column: ordinary images
        uri = row.get("image_uri") or split_page(row["file_name"])[0]
        image = images.setdefault((uri, page), {"id": len(images) + 1, "file_name": page_name(uri, page),
                                                "width": row.get("width"), "height": row.get("height")})
        name = row.get("category")
        if name is None:
            continue
        if name not in by_name:
            by_name[name] = len(categories) + 1
            categories.append({"id": by_name[name], "name": name, "supercategory": ""})
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        rle = rle_of(row)
        annotations.append({
            "id": len(annotations) + 1, "image_id": image["id"], "category_id": by_name[name],
            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(row["area"]), "iscrowd": int(bool(row.get("iscrowd"))),
            "segmentation": rle if rle is not None else [[x1, y1, x2, y1, x2, y2, x1, y2]],
        })
    coco = coco_from_dataset({"images": list(images.values()), "annotations": annotations, "categories": categories})
    coco.pxflow_match_names_only = True
    return coco
