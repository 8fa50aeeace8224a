"""The table record every result serialises itself into: one :class:`ObjectRecord` per object.

A result class owns its serialisation (:meth:`BaseResult.object_records`) and the schema of
its records (:meth:`BaseResult.record_schema`, which starts from :func:`base_record_schema`);
the batch layer (``pxflow.tasks``) only adds the shared columns (run key, pipeline, model,
image URI, shard). Keys a result does not produce stay null; a key outside its declared
schema fails the shard (``pxflow.tasks.rows``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TypedDict

from ..ops.masks import rle_box, rle_to_columns

if TYPE_CHECKING:
    import pyarrow as pa


class ObjectRecord(TypedDict, total=False):
    """One ``objects`` row's own columns (docs/schema.md); every key is optional (null)."""

    cls_id: int | None
    label: str | None
    score: float | None
    x1: float
    y1: float
    x2: float
    y2: float
    mask_counts: str
    mask_height: int
    mask_width: int
    rec_label: str | None
    rec_score: float | None
    index_name: str | None
    index_version: str | None
    prompt_type: str | None
    prompt: str | None


#: the record keys, in table column order
RECORD_KEYS: tuple[str, ...] = tuple(ObjectRecord.__annotations__)


def base_record_schema() -> "pa.Schema":
    """The columns every result's records may fill: :class:`ObjectRecord`'s keys, typed, in table order.

    Every ``objects`` table has them (eval, export, report and docs/schema.md read them), so a
    result class with more columns extends this schema and never drops or retypes one of it.
    pyarrow is imported here, not at module level: predicting never needs it.
    """
    import pyarrow as pa

    return pa.schema(
        [
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


def box_columns(coordinate: Sequence[float] | None) -> dict[str, float]:
    """``x1..y2`` of a ``[x1, y1, x2, y2]`` box (original-image pixels); nothing for None."""
    if coordinate is None:
        return {}
    return dict(zip(("x1", "y1", "x2", "y2"), (float(c) for c in coordinate[:4])))


def mask_columns(rle: Mapping[str, Any] | None, with_box: bool = False) -> dict[str, Any]:
    """The RLE columns of a full-frame mask (and its tight box, for results that have none)."""
    if rle is None:
        return {}
    out = rle_to_columns(rle)
    if with_box:
        out.update(box_columns(rle_box(rle)))
    return out


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def compact_json(value: Any) -> str:
    """A prompt or any small structure as compact JSON (what the ``prompt`` column holds)."""
    from .base import to_jsonable

    return json.dumps(to_jsonable(value), separators=(",", ":"))
