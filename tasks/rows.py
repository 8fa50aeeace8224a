"""Pipeline results -> table rows: the ``objects`` and ``images`` schemas and the one row builder.

Each result class serialises itself (``result.object_records()``) and declares the typed
columns its records fill (``result_class.record_schema()``, see
:mod:`pxflow.pipelines.results.records`); this module adds only the columns every row
shares (run key, pipeline, model, image URI, shard) and builds the ``objects`` schema from
the pipeline's result class. A record key outside that declaration, or a value its column
type cannot hold, is a bug of the result class: :class:`RecordSchemaError` fails the shard
(nothing of it is committed) instead of dropping the value while the row says ``ok``. A
result that cannot build its records at all makes that input an ``inference_failed`` row,
never a failed shard, unless every input of the shard failed that same way
(:func:`systematic_failure`). Masks are COCO compressed RLE on the full image frame (docs/schema.md).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pxflow.pipelines.results import BaseResult
from pxflow.pipelines.results.records import base_record_schema

COMMON_FIELDS = [
    pa.field("run_key", pa.string(), nullable=False),
    pa.field("pipeline", pa.string(), nullable=False),
    pa.field("model_name", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("shard_id", pa.string(), nullable=False),
]
#: the ``objects`` columns the row builder fills, never a record
OBJECT_INDEX = pa.field("object_index", pa.int32(), nullable=False)
#: the page of a PDF input (null for images): a PDF's objects are keyed by (image_uri, page_index, object_index)
PAGE_INDEX = pa.field("page_index", pa.int32())


class RecordSchemaError(ValueError):
    """A result class's records do not fit its declared schema (an undeclared key, a value of the wrong type).

    A ``ValueError``: the shard fails without retries (the same code gives the same records).
    """


def objects_schema(result_class: type[BaseResult] = BaseResult) -> pa.Schema:
    """The ``objects`` table schema of a pipeline yielding ``result_class``: shared columns + its record fragment.

    The fragment must start with the base record columns, unchanged (readers and existing tables
    rely on them), and may not redefine a shared column.
    """
    fragment = result_class.record_schema()
    base = base_record_schema()
    name = result_class.__name__
    if len(fragment) < len(base) or not pa.schema(list(fragment)[: len(base)]).equals(base):
        raise RecordSchemaError(f"{name}.record_schema() must extend BaseResult.record_schema() (its "
                                f"{len(base)} columns first, same types): got {fragment.names}")
    shared = {f.name for f in COMMON_FIELDS} | {PAGE_INDEX.name, OBJECT_INDEX.name}
    problems = []
    clash = sorted(shared.intersection(fragment.names))
    if clash:
        problems.append(f"shared column(s) {clash}")
    dupes = sorted({n for n in fragment.names if fragment.names.count(n) > 1})
    if dupes:
        problems.append(f"duplicate column(s) {dupes}")
    if problems:
        raise RecordSchemaError(f"{name}.record_schema() declares {' and '.join(problems)}")
    return pa.schema(COMMON_FIELDS + [PAGE_INDEX, OBJECT_INDEX] + list(fragment))


#: the ``objects`` schema of the base result (every table has at least these columns)
OBJECTS_SCHEMA = objects_schema()

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
        self,
        run_key: str,
        pipeline: str,
        model_name: str,
        model_sha256: str,
        shard_id: str,
        flow_run_id: str | None = None,
        result_class: type[BaseResult] = BaseResult,
    ) -> None:
        """``result_class`` is the pipeline's (``pipeline.result_class``): its record schema fixes the ``objects``
        columns of this shard."""
        self.flow_run_id = flow_run_id
        self.result_class = result_class
        self.objects_schema = objects_schema(result_class)
        self.record_columns = tuple(result_class.record_schema().names)  # the fragment, declared order
        self.integer_columns = frozenset(
            n for n in self.record_columns if pa.types.is_integer(self.objects_schema.field(n).type))
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
            for record in records:  # outside the try: a result class's bug fails the shard, not this input
                self._check_record(result, record)
            row["status"] = "ok"
            row["num_objects"] = len(records)
            for index, record in enumerate(records):
                self.objects.append({**self.common, "image_uri": uri, "page_index": row["page_index"],
                                     "object_index": index, **record})
        if result.image is not None:
            row["height"], row["width"] = int(result.image.shape[0]), int(result.image.shape[1])
        self.images.append(row)
        return row

    def _check_record(self, result: Any, record: Any) -> None:
        """Every key declared; no fraction for an integer column (pyarrow would truncate 1.5 to 1 silently)."""
        unknown = sorted(set(record).difference(self.record_columns))
        if unknown:
            raise RecordSchemaError(
                f"{type(result).__name__}.object_records() gave key(s) {unknown} outside "
                f"{self.result_class.__name__}.record_schema(); declared columns: {list(self.record_columns)}. "
                "Declare the column by extending record_schema(), or leave the key out"
            )
        for name in self.integer_columns.intersection(record):
            value = record[name]
            if isinstance(value, (float, np.floating)) and not float(value).is_integer():
                raise RecordSchemaError(f"{self.result_class.__name__}.record_schema() declares {name!r} as "
                                        f"{self.objects_schema.field(name).type}; object_records() gave {value!r}")

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """The shard's ``objects`` and ``images`` tables; :class:`RecordSchemaError` names a value its column
        cannot hold."""
        try:
            objects = pa.Table.from_pylist(self.objects, schema=self.objects_schema)
        except (pa.ArrowException, OverflowError) as exc:
            raise RecordSchemaError(self._bad_value(exc)) from exc
        return objects, pa.Table.from_pylist(self.images, schema=IMAGES_SCHEMA)

    def _bad_value(self, exc: Exception) -> str:
        """The first record column and value that its declared type cannot hold (only called on failure)."""
        for field in self.objects_schema:
            for row in self.objects:
                value = row.get(field.name)
                try:
                    pa.array([value], type=field.type)
                except (pa.ArrowException, OverflowError):
                    return (f"{self.result_class.__name__}.record_schema() declares {field.name!r} as {field.type}; "
                            f"object_records() gave {value!r} ({type(value).__name__}) for {row['image_uri']}")
        return f"{self.result_class.__name__} records do not fit their schema: {exc}"


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
