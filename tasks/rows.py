"""Pipeline results -> Parquet rows: the ``objects`` and ``images`` schemas and the one row builder.

Each result class serialises itself (``result.object_records()``, see
:mod:`pxflow.pipelines.results.records`); this module adds only the columns every row
shares (run key, pipeline, model, image URI, shard) and fixes the schema. A result that
cannot build its records makes that input an ``inference_failed`` row, never a failed
shard, unless every input of the shard failed that same way (:func:`systematic_failure`).
Masks are COCO compressed RLE on the full image frame (docs/schema.md).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

import pyarrow as pa

from pxflow.pipelines.results.records import RECORD_KEYS

COMMON_FIELDS = [
    pa.field("run_key", pa.string(), nullable=False),
    pa.field("pipeline", pa.string(), nullable=False),
    pa.field("model_name", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("shard_id", pa.string(), nullable=False),
]

#: column types of the record keys (the record's own columns, in order)
RECORD_TYPES = {
    "cls_id": pa.int32(),
    "label": pa.string(),
    "score": pa.float32(),
    "x1": pa.float32(),
    "y1": pa.float32(),
    "x2": pa.float32(),
    "y2": pa.float32(),
    "mask_counts": pa.string(),
    "mask_height": pa.int32(),
    "mask_width": pa.int32(),
    "rec_label": pa.string(),
    "rec_score": pa.float32(),
    "index_name": pa.string(),
    "index_version": pa.string(),
    "prompt_type": pa.string(),
    "prompt": pa.string(),
}
assert tuple(RECORD_TYPES) == RECORD_KEYS, "tasks.rows and pipelines.results.records disagree on the columns"

OBJECTS_SCHEMA = pa.schema(
    COMMON_FIELDS
    # the page of a PDF input (null for images): a PDF's objects are keyed by (image_uri, page_index, object_index)
    + [pa.field("page_index", pa.int32()), pa.field("object_index", pa.int32(), nullable=False)]
    + [pa.field(name, kind) for name, kind in RECORD_TYPES.items()]
)

IMAGES_SCHEMA = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("page_index", pa.int32()),
        pa.field("etag", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        # a failure that may pass later (throttling, 5xx, an outage): the next run tries the input again
        pa.field("retryable", pa.bool_(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_objects", pa.int32(), nullable=False),
        pa.field("download_ms", pa.float32()),
        pa.field("decode_ms", pa.float32()),
        pa.field("annotated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("flow_run_id", pa.string()),
    ]
)


class RowBuilder:
    """Accumulates one shard's rows; constant per-row fields are given once."""

    def __init__(
        self, run_key: str, pipeline: str, model_name: str, model_sha256: str, shard_id: str, flow_run_id: str | None = None
    ) -> None:
        self.flow_run_id = flow_run_id
        self.annotated_at = datetime.now(timezone.utc)
        self.common = {
            "run_key": run_key,
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
            "page_index": result.data.get("page_index"),
            "etag": meta.get("etag"),
            "size_bytes": meta.get("size_bytes"),
            "download_ms": meta.get("download_ms"),
            "decode_ms": meta.get("decode_ms"),
            "num_objects": 0,
            "retryable": False,
            "annotated_at": self.annotated_at,
            "flow_run_id": self.flow_run_id,
        }
        if not result.ok:
            row.update(status="error", error_type=result.error_type, error_message=result.error_message,
                       retryable=bool(meta.get("transient")))
            self.images.append(row)
            return row
        try:
            records = result.object_records()
        except Exception as exc:  # a malformed result is this input's failure, not the shard's
            row.update(status="error", error_type="inference_failed", error_message=f"cannot build rows: {exc}")
        else:
            row["status"] = "ok"
            row["num_objects"] = len(records)
            for index, record in enumerate(records):
                self.objects.append({**self.common, "image_uri": uri, "page_index": row["page_index"],
                                     "object_index": index, **record})
        if result.image is not None:
            row["height"], row["width"] = int(result.image.shape[0]), int(result.image.shape[1])
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
        "n_retryable": sum(1 for r in images if r.get("retryable")),
        "n_objects": sum(r["num_objects"] for r in images),
        "error_types": errors,
    }


def systematic_failure(images: Sequence[dict[str, Any]]) -> str | None:
    """The one ``inference_failed`` message every image row shares, when there are several; else None.

    One image failing in the model is that image's problem; every image of a shard failing
    with the same exception type and message is the model's (a graph the predictor cannot
    drive, a broken runtime). Writing those as error rows would call the run complete while
    annotating nothing, so the caller fails the shard instead.
    """
    if len(images) < 2:
        return None
    messages = {(row["status"], row.get("error_type"), row.get("error_message")) for row in images}
    if len(messages) != 1:
        return None
    ((status, error_type, message),) = messages
    return message if status == "error" and error_type == "inference_failed" else None
