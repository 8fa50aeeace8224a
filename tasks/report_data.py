"""What a run report shows, read from the Delta tables only (no Prefect, no re-inference).

A run is one ``runs`` row. Its rows are the ``images`` rows it wrote (``flow_run_id``) in the
``images`` version it left (``images_version``: time travel, so a later run replacing them
does not change this run's report), and the ``objects`` rows of those inputs in its
``objects_version``. The previous run of the same annotation key (and partition) is the
``runs`` row before it; the difference between the two runs' snapshots of that key is what
changed since then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxflow.tasks.lake import Lake, parse_partition
from pxflow.tasks.rows import IMAGES_SCHEMA, OBJECTS_SCHEMA

#: what the sample grid and the error list need from ``images`` (never more: a run may have millions of rows)
IMAGE_COLUMNS = ["image_uri", "page_index", "etag", "status", "error_type", "error_message", "num_objects", "width",
                 "height", "download_ms", "decode_ms"]
#: what drawing and counting need from ``objects``
OBJECT_COLUMNS = ["image_uri", "page_index", "object_index", "cls_id", "label", "score", "x1", "y1", "x2", "y2", "mask_counts",
                  "mask_height", "mask_width"]


class ReportError(ValueError):
    """No report can be made (no tables, an unknown run): a usage error, one line."""


@dataclass
class RunDiff:
    """The key's snapshot at this run versus at the previous run of the same key."""

    previous_run_id: str | None
    new: int
    changed: int
    removed: int
    unchanged: int
    #: label -> (count before, count after), every label of either snapshot
    classes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class RunData:
    """One run's ``runs`` row, its ``images`` and ``objects`` rows, and its diff to the previous run."""

    run: dict[str, Any]
    images: pa.Table
    objects: pa.Table
    diff: RunDiff

    @property
    def run_id(self) -> str:
        return str(self.run["flow_run_id"])

    def class_counts(self) -> list[tuple[str, int]]:
        """``(label, objects)`` of this run, most frequent first (ties by label)."""
        return _label_counts(self.objects.column("label"))

    def error_examples(self, per_type: int = 3) -> list[tuple[str, int, list[tuple[str, str]]]]:
        """``(error_type, count, [(image_uri, error_message), ...])`` per error type, most frequent first."""
        errors = self.images.filter(pc.equal(self.images.column("status"), "error"))
        out = []
        for error_type, count in _label_counts(errors.column("error_type"), missing="unknown"):
            column = errors.column("error_type")
            rows = errors.filter(pc.is_null(column) if error_type == "unknown" else pc.equal(column, error_type))
            rows = rows.sort_by("image_uri").slice(0, per_type)
            out.append((error_type, count, list(zip(rows.column("image_uri").to_pylist(),
                                                    rows.column("error_message").to_pylist()))))
        return out


def _label_counts(column: pa.ChunkedArray, missing: str = "(no label)") -> list[tuple[str, int]]:
    counts = pc.value_counts(column.fill_null(missing)).to_pylist()
    return sorted(((c["values"], c["counts"]) for c in counts), key=lambda t: (-t[1], t[0]))


def read_runs(lake: Lake) -> list[dict[str, Any]]:
    """Every ``runs`` row, oldest first; a clear error when there is no ``runs`` table."""
    runs = lake.read("runs")
    if runs is None or runs.num_rows == 0:
        raise ReportError(f"{lake.output} has no runs table (not an annotate output, or no run finished yet)")
    return sorted(runs.to_pylist(), key=lambda r: (r["ended_at"], r["started_at"]))


def select_run(runs: list[dict[str, Any]], run_id: str | None) -> dict[str, Any]:
    """The run ``run_id`` names, or the latest; an unknown id is an error naming the latest ones."""
    if run_id is None:
        return runs[-1]
    found = [r for r in runs if r["flow_run_id"] == run_id]
    if not found:
        latest = ", ".join(str(r["flow_run_id"]) for r in runs[-3:][::-1])
        raise ReportError(f"no run {run_id!r} in the runs table (latest: {latest})")
    return found[-1]


def previous_run(runs: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
    """The last run of the same annotation key and partition that ended before ``run``."""
    earlier = [r for r in runs if r["run_key"] == run["run_key"] and r["partition"] == run["partition"]
               and r["ended_at"] < run["ended_at"] and r["flow_run_id"] != run["flow_run_id"]]
    return earlier[-1] if earlier else None


def _key_filter(run: dict[str, Any], schema: pa.Schema) -> pc.Expression:
    condition = pc.field("run_key") == run["run_key"]
    part = parse_partition(run["partition"])
    if part and part[0] in schema.names:
        condition = condition & (pc.field(part[0]) == part[1])
    return condition


def _snapshot(lake: Lake, table: str, version: int | None, run: dict[str, Any], columns: list[str]) -> pa.Table | None:
    """The key's (and partition's) rows of ``table`` at ``version``; None when the run left no version.

    The scan filters on the key and partition only; finer filters run on the rows read. Data files that
    delta-rs rewrote (a ``--prune`` delete) store strings as ``string_view``, and pyarrow's scanner has no
    ``equal`` for a nullable ``string_view`` column against a string (``flow_run_id``).
    """
    if version is None:
        return None
    data = lake.dataset(table, version)
    if data is None:
        return None
    present = [c for c in columns if c in data.schema.names]  # a snapshot older than a column (objects.page_index)
    return data.to_table(columns=present, filter=_key_filter(run, data.schema))


def _empty(schema: pa.Schema, columns: list[str]) -> pa.Table:
    """No rows, with the table's column types (a run that left no version of a table)."""
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def diff_runs(lake: Lake, run: dict[str, Any], previous: dict[str, Any] | None) -> RunDiff:
    """New, re-annotated and removed ``images`` rows of the key since ``previous``, and per-class object counts.

    *changed* counts inputs that had a row before and whose row this run rewrote (new content, a retried
    failure, ``--force``/``--replace``); *removed*: rows gone since (``--prune``).
    """
    cols = ["image_uri", "flow_run_id"]
    after = _snapshot(lake, "images", run["images_version"], run, cols)
    before = _snapshot(lake, "images", previous["images_version"], previous, cols) if previous else None
    now = {} if after is None else dict(zip(after.column("image_uri").to_pylist(), after.column("flow_run_id").to_pylist()))
    then = set() if before is None else set(before.column("image_uri").to_pylist())
    rewritten = {u for u in then & now.keys() if now[u] == run["flow_run_id"]}
    objects_after = _snapshot(lake, "objects", run["objects_version"], run, ["label"])
    objects_before = _snapshot(lake, "objects", previous["objects_version"], previous, ["label"]) if previous else None
    count_after = dict(_label_counts(objects_after.column("label"))) if objects_after is not None else {}
    count_before = dict(_label_counts(objects_before.column("label"))) if objects_before is not None else {}
    classes = {k: (count_before.get(k, 0), count_after.get(k, 0)) for k in sorted(count_before.keys() | count_after.keys())}
    return RunDiff(
        previous_run_id=None if previous is None else str(previous["flow_run_id"]),
        new=len(now.keys() - then), changed=len(rewritten), removed=len(then - now.keys()),
        unchanged=len(then & now.keys()) - len(rewritten), classes=classes,
    )


def load_run(lake: Lake, run_id: str | None = None) -> RunData:
    """The run ``run_id`` (default: the latest) with its rows and its diff to the previous run of its key."""
    runs = read_runs(lake)
    run = select_run(runs, run_id)
    images = _snapshot(lake, "images", run["images_version"], run, [*IMAGE_COLUMNS, "flow_run_id"])
    if images is None:
        images = _empty(IMAGES_SCHEMA, IMAGE_COLUMNS)
    else:
        images = images.filter(pc.equal(images.column("flow_run_id"), run["flow_run_id"])).select(IMAGE_COLUMNS)
    objects = _snapshot(lake, "objects", run["objects_version"], run, OBJECT_COLUMNS)
    if objects is None:
        objects = _empty(OBJECTS_SCHEMA, OBJECT_COLUMNS)
    else:
        objects = objects.filter(pc.is_in(objects.column("image_uri"), images.column("image_uri").combine_chunks()))
    return RunData(run=run, images=images, objects=objects, diff=diff_runs(lake, run, previous_run(runs, run)))


def scores(data: RunData) -> np.ndarray:
    """The run's object scores (nulls dropped), for the histogram."""
    return np.asarray(data.objects.column("score").drop_null().to_numpy(), dtype=np.float32)
