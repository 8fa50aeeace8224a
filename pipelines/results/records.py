"""The table record every result serialises itself into: one :class:`ObjectRecord` per object.

A result class owns its serialisation (:meth:`BaseResult.object_records`); the batch
layer (``pxflow.tasks``) only adds the shared columns (run key, pipeline, model,
image URI, shard) and the schema. Keys a result does not produce stay null.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence, TypedDict

from ..ops.masks import rle_box, rle_to_columns


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
