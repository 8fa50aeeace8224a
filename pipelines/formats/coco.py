"""A COCO dataset (``instances_*.json``, CVAT's "COCO 1.0" export) read back as reviewed images.

Polygons and uncompressed RLE become compressed full-frame RLE (``pipelines.ops.masks.segmentation_to_rle``);
the source's category ids, ``iscrowd`` and ``area`` are kept, so an evaluation against the stored ground truth
scores exactly as one against the file (crowd regions stay ignore regions, area ranges stay the file's).
A ``file_name`` ending in ``#page=N`` (pxflow's name for a PDF page) is that page.
"""

from __future__ import annotations

from typing import Any

from pxflow.pipelines.io.pages import split_page
from pxflow.pipelines.ops.masks import segmentation_to_rle

from .review import FormatError, ReviewImage, ReviewObject


def read_dataset(data: Any) -> tuple[list[ReviewImage], dict[str, int]]:
    """``{images, annotations, categories}`` -> every image of the dataset with its annotations."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise FormatError("a COCO dataset is a JSON object with images, annotations and categories lists")
    try:
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {int(i["id"]): ReviewImage(name=str(i["file_name"]), width=int(i["width"]), height=int(i["height"]),
                                            page_index=split_page(str(i["file_name"]))[1])
                  for i in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"a COCO category needs id and name, an image id, file_name, width and height ({exc})") from None
    for n, ann in enumerate(data["annotations"]):
        where = f"annotation {ann.get('id', n) if isinstance(ann, dict) else n}"
        try:
            image = images[int(ann["image_id"])]
            category = int(ann["category_id"])
            label = names[category]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: needs a known image_id and category_id and a bbox ({exc})") from None
        segmentation = ann.get("segmentation")
        rle = segmentation_to_rle(segmentation, image.height, image.width) if segmentation else None
        area = ann.get("area")
        image.objects.append(ReviewObject(label=label, box=[x, y, x + w, y + h], rle=rle, category_id=category,
                                          iscrowd=bool(ann.get("iscrowd", 0)), area=None if area is None else float(area)))
    return list(images.values()), {"images": len(images), "annotations": len(data["annotations"])}
