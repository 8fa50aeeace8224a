"""Label Studio tasks with pre-annotations, and Label Studio's JSON export read back as labels.

Export (:func:`tasks_for`): one task per image, ``data.image`` the image reference and
``data.pxflow_image_uri`` pxflow's identity (Label Studio keeps task data through its exports, so
the import knows the image without guessing from names; a PDF page adds ``data.pxflow_page_index``, and its
``data.image`` ends in the page fragment ``#page=N``). Each object is a ``rectanglelabels``
result (``x``, ``y``, ``width``, ``height`` in percent of ``original_width`` / ``original_height``)
and, when it has a mask, a ``brushlabels`` result whose id is the rectangle's id + ``MASK_SUFFIX``:
Label Studio has no link between two shapes, so that id is how :func:`read_export` keeps a box and
its mask as one object.

Brush masks use Label Studio's own RLE (``"format": "rle"``), which is not COCO's: the RGBA image
(``H x W x 4`` bytes, row-major) packed with thi.ng's rle-pack: a 32-bit value count, a 5-bit word
size - 1, four 4-bit run-length field sizes - 1, then chunks of ``flag(1) size_index(2)
length-1(size bits)`` followed by one word (flag 1: a run) or ``length`` words (flag 0: literals).
This is ``label_studio_converter.brush`` (``encode_rle`` / ``decode_rle``), written here with numpy
because that package drags pandas and nltk into every worker; tests check both directions
against it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

import numpy as np

from pxflow.pipelines.io.pages import page_fragment, page_name, split_page
from pxflow.pipelines.ops.masks import decode_rle, encode_rle, mask_to_box, segmentation_to_rle

from .review import FormatError, ReviewImage, ReviewObject

#: the labeling config's tag names the results refer to (see :func:`label_config`)
BOX_FROM, MASK_FROM, TO_NAME = "label", "mask", "image"
MASK_SUFFIX = "-mask"
#: run-length field sizes (bits) of Label Studio's encoder: runs up to 8, 16, 256, 65536 values
RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8
LOCAL_FILES = "/data/local-files/?d="


# ---------------------------------------------------------------- brush RLE
def encode_brush(mask: np.ndarray) -> list[int]:
    """A boolean ``H x W`` mask as Label Studio brush RLE bytes (255 in all four RGBA channels where set)."""
    values = np.repeat(np.asarray(mask, dtype=bool).ravel(), 4).astype(np.uint8) * 255
    n = values.size
    header = f"{n:032b}{WORD_SIZE - 1:05b}" + "".join(f"{s - 1:04b}" for s in RLE_SIZES)
    starts = np.flatnonzero(np.diff(values, prepend=np.int16(-1)) != 0) if n else np.zeros(0, int)
    lengths = np.diff(np.append(starts, n))
    chunks = [header]
    longest = 1 << RLE_SIZES[-1]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        value = f"{int(values[start]):08b}"
        while length > 0:
            take = min(length, longest)
            index = next(i for i, s in enumerate(RLE_SIZES) if take - 1 < (1 << s))
            chunks.append(f"1{index:02b}{take - 1:0{RLE_SIZES[index]}b}{value}")
            length -= take
    bits = "".join(chunks)
    bits += "0" * (-len(bits) % 8)
    return np.packbits(np.frombuffer(bits.encode("ascii"), dtype=np.uint8) - 48).tolist()


def decode_brush(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> boolean ``height x width`` mask (alpha >= 128: brush edges are anti-aliased)."""
    bits = (np.unpackbits(np.asarray(rle, dtype=np.uint8)) + 48).tobytes().decode("ascii")
    pos = 0

    def read(size: int) -> int:
        nonlocal pos
        if pos + size > len(bits):
            raise FormatError("brush RLE ends early")
        value = int(bits[pos:pos + size], 2)
        pos += size
        return value

    num = read(32)
    if num != height * width * 4:
        raise FormatError(f"brush RLE holds {num} values, expected {height}x{width}x4 = {height * width * 4}")
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        run = read(1)
        j = min(num, i + 1 + read(sizes[read(2)]))
        if run:
            out[i:j] = read(word)
        else:
            out[i:j] = [read(word) for _ in range(j - i)]
        i = j
    return out.reshape(height, width, 4)[:, :, 3] >= 128


# ---------------------------------------------------------------- export
def image_ref(image: ReviewImage, image_root: str | None) -> str:
    """What Label Studio loads for ``image``.

    ``image_root`` an ``http(s)://`` URL: the URL + the image's name (its path below the run's common folder).
    A local folder (Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``): ``/data/local-files/?d=`` + the
    image's path below that folder. None: S3 and http(s) images as they are (Label Studio's cloud storage signs
    ``s3://`` URLs), local files as local-storage paths below ``/``. A PDF page's reference is its PDF's
    followed by the page fragment ``#page=N`` (left unquoted: it is the URL's fragment, not part of the path).
    """
    fragment = page_fragment(image.page_index)
    name = split_page(image.name)[0] if fragment else image.name
    uri = image.uri or name
    if image_root and "://" in image_root:
        return image_root.rstrip("/") + "/" + quote(name, safe="/") + fragment
    if "://" in uri and not uri.startswith("file://"):
        if image_root:
            raise FormatError(f"{uri} is not a local file, so it cannot be served from the folder {image_root}")
        return uri + fragment
    path = os.path.realpath(uri[len("file://"):] if uri.startswith("file://") else uri)
    root = os.path.realpath(image_root) if image_root else os.sep
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        raise FormatError(f"{path} is not below --image-root {root}")
    return LOCAL_FILES + quote(relative.replace(os.sep, "/"), safe="/") + fragment


def _percent(box: Sequence[float], width: int, height: int) -> dict[str, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"x": x1 / width * 100.0, "y": y1 / height * 100.0,
            "width": (x2 - x1) / width * 100.0, "height": (y2 - y1) / height * 100.0, "rotation": 0}


def task_for(image: ReviewImage, ref: str, model_version: str | None = None) -> dict[str, Any]:
    """One Label Studio task with the image's objects as ``predictions``."""
    w, h = int(image.width), int(image.height)
    common = {"to_name": TO_NAME, "original_width": w, "original_height": h, "image_rotation": 0}
    results = []
    for n, obj in enumerate(image.objects):
        rid = f"r{n}"
        extra = {} if obj.score is None else {"score": obj.score}
        results.append({"id": rid, "type": "rectanglelabels", "from_name": BOX_FROM, **common, **extra,
                        "value": {**_percent(obj.box, w, h), "rectanglelabels": [obj.label]}})
        if obj.rle is not None:
            results.append({"id": rid + MASK_SUFFIX, "type": "brushlabels", "from_name": MASK_FROM, **common, **extra,
                            "value": {"format": "rle", "rle": encode_brush(decode_rle(obj.rle)), "brushlabels": [obj.label]}})
    scores = [o.score for o in image.objects if o.score is not None]
    prediction = {"model_version": model_version or "pxflow", "result": results}
    if scores:
        prediction["score"] = float(np.mean(scores))
    data = {"image": ref, **({"pxflow_image_uri": image.uri} if image.uri else {}),
            **({"pxflow_page_index": image.page_index} if image.page_index is not None else {})}
    return {"data": data, "predictions": [prediction]}


def label_config(labels: Iterable[str]) -> str:
    """A labeling config whose tag names match the tasks' results (rectangles + brushes on one image)."""
    from xml.sax.saxutils import quoteattr

    items = "".join(f"    <Label value={quoteattr(label)}/>\n" for label in labels)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <RectangleLabels name="{BOX_FROM}" toName="{TO_NAME}">\n{items}  </RectangleLabels>\n'
            f'  <BrushLabels name="{MASK_FROM}" toName="{TO_NAME}">\n{items}  </BrushLabels>\n</View>\n')


# ---------------------------------------------------------------- import
def _chosen_annotation(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The task's latest annotation that was not skipped; None when nobody reviewed it."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    return max(enumerate(done), key=lambda p: (str(p[1].get("updated_at") or p[1].get("created_at") or ""), p[0]))[1]


def _size(result: Mapping[str, Any], where: str) -> tuple[int, int]:
    try:
        return int(result["original_width"]), int(result["original_height"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{where}: a {result.get('type')} result without original_width/original_height") from None


def _box_of(value: Mapping[str, Any], w: int, h: int) -> list[float]:
    """A rectangle's pixel box; a rotated one (about its top-left corner, as Label Studio rotates) by its bounds."""
    x, y = float(value["x"]) * w / 100.0, float(value["y"]) * h / 100.0
    bw, bh = float(value["width"]) * w / 100.0, float(value["height"]) * h / 100.0
    angle = np.deg2rad(float(value.get("rotation") or 0.0))
    if not angle:
        return [x, y, x + bw, y + bh]
    c, s = np.cos(angle), np.sin(angle)
    xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    return [max(0.0, min(xs)), max(0.0, min(ys)), min(float(w), max(xs)), min(float(h), max(ys))]


def _label(value: Mapping[str, Any], key: str, where: str) -> str:
    labels = value.get(key) or []
    if not labels:
        raise FormatError(f"{where}: a {key} result without a label")
    return str(labels[0])


def read_export(tasks: Any) -> tuple[list[ReviewImage], dict[str, int]]:
    """Label Studio's JSON export (a list of tasks) -> the reviewed images and counts.

    Each task's latest annotation that was not skipped is its ground truth; a task nobody annotated is not
    reviewed and is left out (``tasks_unreviewed``). Rectangles, brushes and polygons become objects; a brush
    or polygon whose id is a rectangle's id + ``MASK_SUFFIX`` is that rectangle's mask. Other result types
    (choices, text) are counted in ``results_skipped``. A PDF page is known by ``data.pxflow_page_index`` beside
    ``data.pxflow_image_uri``, else by the ``#page=N`` fragment of its reference.
    """
    if not isinstance(tasks, list):
        raise FormatError("a Label Studio JSON export is a list of tasks")
    images, counts = [], {"tasks": len(tasks), "tasks_unreviewed": 0, "results_skipped": 0}
    for number, task in enumerate(tasks):
        where = f"task {task.get('id', number) if isinstance(task, dict) else number}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise FormatError(f"{where}: not a Label Studio task (no data)")
        annotation = _chosen_annotation(task)
        if annotation is None:
            counts["tasks_unreviewed"] += 1
            continue
        data = task["data"]
        ref = data.get("image") or next((v for v in data.values() if isinstance(v, str)), None)  # another value name
        if ref is None:
            raise FormatError(f"{where}: no image in the task data")
        boxes: dict[str, ReviewObject] = {}
        masks: list[tuple[str, ReviewObject]] = []
        size: tuple[int, int] | None = None
        for result in annotation.get("result") or []:
            kind = str(result.get("type", "")).lower()
            value = result.get("value") or {}
            if kind not in ("rectanglelabels", "brushlabels", "polygonlabels"):
                counts["results_skipped"] += 1
                continue
            w, h = _size(result, where)
            size = size or (w, h)
            rid = str(result.get("id", f"{where}-{len(boxes) + len(masks)}"))
            if kind == "rectanglelabels":
                boxes[rid] = ReviewObject(label=_label(value, "rectanglelabels", where), box=_box_of(value, w, h))
                continue
            if kind == "brushlabels":
                if value.get("format", "rle") != "rle" or "rle" not in value:
                    raise FormatError(f"{where}: a brush result without Label Studio RLE")
                mask = decode_brush(value["rle"], h, w)
            else:
                polygon = [c for x, y in value.get("points") or [] for c in (float(x) * w / 100.0, float(y) * h / 100.0)]
                if len(polygon) < 6:
                    raise FormatError(f"{where}: a polygon with fewer than 3 points")
                mask = decode_rle(segmentation_to_rle([polygon], h, w))
            box = mask_to_box(mask)
            if box is None:
                continue  # an erased brush: nothing left of the object
            masks.append((rid, ReviewObject(label=_label(value, kind, where), box=box, rle=encode_rle(mask))))
        objects = []
        for rid, obj in masks:
            paired = boxes.pop(rid[: -len(MASK_SUFFIX)], None) if rid.endswith(MASK_SUFFIX) else None
            if paired is not None:  # the rectangle is the object's box and label; the brush its mask
                obj.box, obj.label = paired.box, paired.label
            objects.append(obj)
        objects = list(boxes.values()) + objects
        uri = data.get("pxflow_image_uri")
        name, page = split_page(_name_of(str(ref)))
        if uri:
            name, page = _name_of(str(uri)), data.get("pxflow_page_index")
            page = None if page is None else int(page)
        width, height = size if size else (None, None)
        images.append(ReviewImage(name=page_name(name, page), width=width, height=height, objects=objects, uri=uri,
                                  ref=str(ref), page_index=page))
    return images, counts


def _name_of(ref: str) -> str:
    """A file name for an image reference: the local-storage path, a URL's path, or the reference itself.

    A ``#page=N`` fragment stays on the name (:func:`split_page` reads it).
    """
    from urllib.parse import unquote, urlparse

    if LOCAL_FILES in ref:
        return unquote(ref.split(LOCAL_FILES, 1)[1])
    if "://" in ref:
        parsed = urlparse(ref)
        if parsed.scheme not in ("http", "https"):
            return ref
        path = unquote(parsed.path).lstrip("/")
        return path + "#" + parsed.fragment if split_page(f"{path}#{parsed.fragment}")[1] is not None else path
    return ref

