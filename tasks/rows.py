"""Pipeline results -> Parquet rows: the ``objects`` and ``images`` schemas and the one row builder.

Every pipeline's result maps onto the same ``objects`` columns; what a
pipeline does not produce stays null (docs/schema.md). A result class may
define ``object_records() -> list[dict]`` with the column names below to take
full control; otherwise the builder reads PaddleX's result dicts:

- detection / instance segmentation: ``boxes: [{cls_id, label, score, coordinate}]``,
  optional ``masks`` (``[N, H, W]`` array or list of COCO RLE dicts) or a per-box
  ``rle``/``mask`` entry
- PP-ShiTuV2: ``boxes: [{labels, rec_scores, det_score, coordinate}]`` (or
  ``rec_label``/``rec_score`` per box), plus ``index_name``/``index_version``
- open-vocabulary segmentation (SAM): ``masks`` + ``mask_infos: [{label, prompt}]``,
  ``prompt_type`` on the result or per object; boxes come from the masks when absent

Masks are stored as COCO compressed RLE on the full image frame
(``mask_counts`` string, ``mask_height``, ``mask_width``).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pxflow.pipelines.ops.masks import encode_rle, rle_box, rle_to_columns, segmentation_to_rle

COMMON_FIELDS = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("pipeline", pa.string(), nullable=False),
    pa.field("model_name", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("shard_id", pa.string(), nullable=False),
]

OBJECTS_SCHEMA = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("object_index", pa.int32(), nullable=False),
        pa.field("cls_id", pa.int32()),
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
        pa.field("x2", pa.float32()),
        pa.field("y2", pa.float32()),
        pa.field("mask_counts", pa.string()),
        pa.field("mask_height", pa.int32()),
        pa.field("mask_width", pa.int32()),
        pa.field("rec_label", pa.string()),
        pa.field("rec_score", pa.float32()),
        pa.field("index_name", pa.string()),
        pa.field("index_version", pa.string()),
        pa.field("prompt_type", pa.string()),
        pa.field("prompt", pa.string()),
    ]
)

IMAGES_SCHEMA = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("etag", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_objects", pa.int32(), nullable=False),
        pa.field("download_ms", pa.float32()),
        pa.field("decode_ms", pa.float32()),
    ]
)

OBJECT_COLUMNS = [f.name for f in OBJECTS_SCHEMA][len(COMMON_FIELDS) :]


def mask_rle(mask: Any) -> dict[str, Any] | None:
    """A COCO RLE dict ``{"size": [h, w], "counts": str}`` from a binary mask or any RLE dict."""
    if mask is None:
        return None
    if isinstance(mask, dict):
        height, width = mask["size"]
        return segmentation_to_rle(mask, int(height), int(width))
    return encode_rle(np.asarray(mask))


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return value[0] if len(value) else None
    return value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _prompt_text(prompt: Any) -> str | None:
    if prompt is None or isinstance(prompt, str):
        return prompt
    from pxflow.pipelines.results.base import to_jsonable

    return json.dumps(to_jsonable(prompt), separators=(",", ":"))


def object_records(result: Any) -> list[dict[str, Any]]:
    """Per-object dicts with :data:`OBJECT_COLUMNS` keys (missing keys become null)."""
    custom = getattr(result, "object_records", None)
    if callable(custom):
        return list(custom())
    data = result.data if hasattr(result, "data") else dict(result)
    boxes = list(data.get("boxes") or [])
    masks = data.get("masks")
    infos = list(data.get("mask_infos") or [])
    count = len(boxes) if boxes else (len(masks) if masks is not None else 0)
    encoded = getattr(result, "rles", None) if masks is not None else None  # MaskResult caches its RLEs
    out: list[dict[str, Any]] = []
    for i in range(count):
        box = boxes[i] if i < len(boxes) else {}
        info = infos[i] if i < len(infos) else {}
        mask = box.get("rle", box.get("mask"))
        if mask is None and encoded is not None and i < len(encoded):
            mask = encoded[i]
        elif mask is None and masks is not None and i < len(masks):
            mask = masks[i]
        rle = mask_rle(mask)
        labels = box.get("labels")
        rec_label = box.get("rec_label", _first(labels))
        rec_score = box.get("rec_score", _first(box.get("rec_scores")))
        label = box.get("label", info.get("label", rec_label))
        record: dict[str, Any] = {
            "cls_id": box.get("cls_id", info.get("cls_id")),
            "label": label,
            "score": _float(box.get("score", box.get("det_score", info.get("score")))),
            "rec_label": None if rec_label is None else str(rec_label),
            "rec_score": _float(rec_score),
            "index_name": box.get("index_name", data.get("index_name")),
            "index_version": box.get("index_version", data.get("index_version")),
            "prompt_type": box.get("prompt_type", info.get("prompt_type", data.get("prompt_type"))),
            "prompt": _prompt_text(box.get("prompt", info.get("prompt"))),
        }
        if record["prompt_type"] is None and isinstance(label, str) and label in ("box_prompt", "point_prompt"):
            record["prompt_type"] = label[: -len("_prompt")]  # PaddleX names SAM masks by their prompt type
        coordinate = box.get("coordinate")
        if coordinate is None and rle is not None:
            coordinate = rle_box(rle)
        if coordinate is not None:
            record.update(zip(("x1", "y1", "x2", "y2"), (float(c) for c in coordinate[:4])))
        if rle is not None:
            record.update(rle_to_columns(rle))
        out.append(record)
    return out


class RowBuilder:
    """Accumulates one shard's rows; constant per-row fields are given once."""

    def __init__(self, run_id: str, pipeline: str, model_name: str, model_sha256: str, shard_id: str) -> None:
        self.common = {
            "run_id": run_id,
            "pipeline": pipeline,
            "model_name": model_name,
            "model_sha256": model_sha256,
            "shard_id": shard_id,
        }
        self.objects: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def add(self, uri: str, result: Any, meta: dict[str, Any]) -> dict[str, Any]:
        """Rows for one input (``result`` is the pipeline's result or ErrorResult); returns its image row."""
        row = {
            **self.common,
            "image_uri": uri,
            "etag": meta.get("etag"),
            "size_bytes": meta.get("size_bytes"),
            "download_ms": meta.get("download_ms"),
            "decode_ms": meta.get("decode_ms"),
            "num_objects": 0,
        }
        if not getattr(result, "ok", True):
            row.update(status="error", error_type=result.error_type, error_message=result.error_message)
            image = None
        else:
            try:
                records = object_records(result)
            except Exception as exc:  # a malformed result is this input's failure, not the shard's
                records = None
                row.update(status="error", error_type="inference_failed", error_message=f"cannot build rows: {exc}")
            if records is not None:
                row["status"] = "ok"
                row["num_objects"] = len(records)
                for index, record in enumerate(records):
                    self.objects.append({**self.common, "image_uri": uri, "object_index": index, **record})
            image = getattr(result, "image", None)
        if image is not None:
            row["height"], row["width"] = int(image.shape[0]), int(image.shape[1])
        self.images.append(row)
        return row

    def tables(self) -> tuple[pa.Table, pa.Table]:
        return (
            pa.Table.from_pylist(self.objects, schema=OBJECTS_SCHEMA),
            pa.Table.from_pylist(self.images, schema=IMAGES_SCHEMA),
        )


def summarize(images: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per status and error type over image rows."""
    errors: dict[str, int] = {}
    ok = 0
    for row in images:
        if row["status"] == "ok":
            ok += 1
        else:
            errors[row["error_type"]] = errors.get(row["error_type"], 0) + 1
    return {
        "n_inputs": len(images),
        "n_ok": ok,
        "n_error": len(images) - ok,
        "n_objects": sum(r["num_objects"] for r in images),
        "error_types": errors,
    }
