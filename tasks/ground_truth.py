"""The ``ground_truth`` table: human-corrected labels brought back from review, one import per commit.

``pxflow import-gt`` appends one *import* (all rows of one file) in one Delta commit through
:meth:`Lake.write`; nothing is ever replaced, so every earlier import stays queryable and "quality over
time" is one query joining imports to evaluations. ``pxflow eval --gt lake`` reads the latest import (or
the latest of one ``source``) with :func:`read_import`. Schema: docs/schema.md (``ground_truth``).

One row per object; an image the reviewer left without objects gets one row with a null ``category``,
so "nothing here" stays ground truth (its false positives count) instead of vanishing. A PDF page's rows carry
the PDF's ``image_uri`` and the page's ``page_index`` (the tool named it ``doc.pdf#page=N``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pxflow.pipelines.formats.review import ReviewImage
from pxflow.pipelines.io.pages import split_page
from pxflow.pipelines.ops.masks import rle_area, rle_to_columns

from .lake import Lake

GROUND_TRUTH_TABLE = "ground_truth"

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("import_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_version", pa.string(), nullable=False),
        pa.field("imported_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("image_uri", pa.string()),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("page_index", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("object_index", pa.int32()),
        pa.field("category", pa.string()),
        pa.field("category_id", pa.int32()),
        pa.field("x1", pa.float64()),
        pa.field("y1", pa.float64()),
        pa.field("x2", pa.float64()),
        pa.field("y2", pa.float64()),
        pa.field("mask_counts", pa.string()),
        pa.field("mask_height", pa.int32()),
        pa.field("mask_width", pa.int32()),
        pa.field("area", pa.float64()),
        pa.field("iscrowd", pa.bool_()),
    ]
)


def ground_truth_rows(images: Sequence[ReviewImage], *, source: str, source_format: str, source_file: str,
                      source_version: str, import_id: str | None = None,
                      imported_at: datetime | None = None) -> pa.Table:
    """The rows of one import (``import_id`` and ``imported_at`` default to a new id and now)."""
    common = {"import_id": import_id or uuid.uuid4().hex[:16], "source": source, "source_format": source_format,
              "source_file": source_file, "source_version": source_version,
              "imported_at": imported_at or datetime.now(timezone.utc)}
    rows: list[dict[str, Any]] = []
    for image in images:
        base = {**common, "image_uri": image.uri, "file_name": image.name, "page_index": image.page_index,
                "width": image.width, "height": image.height}
        if not image.objects:
            rows.append(base)
        for index, obj in enumerate(image.objects):
            x1, y1, x2, y2 = obj.box
            area = obj.area
            if area is None:
                area = float(rle_area(obj.rle)) if obj.rle is not None else float((x2 - x1) * (y2 - y1))
            rows.append({**base, "object_index": index, "category": obj.label, "category_id": obj.category_id,
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2, "area": area, "iscrowd": bool(obj.iscrowd),
                         **(rle_to_columns(obj.rle) if obj.rle is not None else {})})
    return pa.Table.from_pylist(rows, schema=GROUND_TRUTH_SCHEMA)


def write_import(lake: Lake, rows: pa.Table) -> int:
    """Append one import (one commit); returns the table's new version."""
    return lake.write(GROUND_TRUTH_TABLE, rows)


class GroundTruthError(ValueError):
    """No ground truth to read (no table, no import of that source): a usage error."""


def imports(lake: Lake) -> list[dict[str, Any]]:
    """Every import: ``import_id``, ``source``, ``imported_at`` ..., oldest first."""
    data = lake.dataset(GROUND_TRUTH_TABLE)
    if data is None:
        return []
    columns = ["import_id", "source", "source_format", "source_file", "source_version", "imported_at"]
    rows = data.to_table(columns=columns).group_by(columns).aggregate([]).to_pylist()
    return sorted(rows, key=lambda r: (r["imported_at"], r["import_id"]))


def latest_import(lake: Lake, source: str | None = None) -> dict[str, Any]:
    """The latest import (of ``source`` when given); :class:`GroundTruthError` when there is none."""
    found = [r for r in imports(lake) if source is None or r["source"] == source]
    if not found:
        where = f"{lake.output}/{GROUND_TRUTH_TABLE}"
        if source is None:
            raise GroundTruthError(f"no ground truth at {where}: bring some with `pxflow import-gt --output {lake.output}`")
        names = sorted({r["source"] for r in imports(lake)})
        raise GroundTruthError(f"no ground truth of source {source!r} at {where}; sources: {', '.join(names) or 'none'}")
    return found[-1]


def read_import(lake: Lake, import_id: str) -> list[dict[str, Any]]:
    """The rows of one import."""
    return lake.read(GROUND_TRUTH_TABLE, filter=pc.field("import_id") == import_id).to_pylist()


def resolve_uris(images: Iterable[ReviewImage], uris: Iterable[str]) -> int:
    """Fill ``image.uri`` for images the tool knew only by name, from the output's image URIs.

    The name matches a URI's file name or trailing path (``pipelines.evaluation.image_id_for``'s rule); a name
    that matches several URIs, or none, keeps no URI (evaluation then matches it by name). A page's name
    (``doc.pdf#page=N``) matches by its PDF's name: the page stays in ``image.page_index``. Returns how many
    were resolved.
    """
    from pxflow.pipelines.evaluation import coco_from_dataset, image_id_for

    pending = [image for image in images if image.uri is None]
    if not pending:
        return 0
    names = {name: n for n, name in enumerate(dict.fromkeys(split_page(image.name)[0] for image in pending), 1)}
    coco = coco_from_dataset({"images": [{"id": n, "file_name": name} for name, n in names.items()]})
    coco.pxflow_match_names_only = True
    found: dict[int, set[str]] = {}
    for uri in uris:
        try:
            found.setdefault(image_id_for(uri, coco), set()).add(uri)
        except ValueError:
            continue
    resolved = 0
    for image in pending:
        n = names[split_page(image.name)[0]]  # a PDF's pages share its name
        if len(found.get(n, ())) == 1:
            (image.uri,) = found[n]
            resolved += 1
    return resolved

