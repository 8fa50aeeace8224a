"""The ``runs`` table: one row per flow run, appended when the run ends (never overwritten).

A rerun that skipped everything adds its own row (``images_inferred = 0``) instead of
erasing the figures of the run that did the work; the row names the table versions the
run produced, so its exact output stays reachable by Delta time travel.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_key", pa.string(), nullable=False),
        pa.field("flow_run_id", pa.string()),
        pa.field("pipeline", pa.string(), nullable=False),
        pa.field("model_name", pa.string()),
        pa.field("model_sha256", pa.string()),
        pa.field("input", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("partition", pa.string()),
        pa.field("parameters", pa.string()),  # the flow options as JSON (block names, never secrets)
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ended_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("listed", pa.int64()),
        pa.field("duplicates", pa.int64()),
        pa.field("unchanged", pa.int64()),
        pa.field("new", pa.int64()),
        pa.field("changed", pa.int64()),
        pa.field("retried", pa.int64()),
        pa.field("pruned", pa.int64()),
        pa.field("shards_planned", pa.int64()),
        pa.field("shards_committed", pa.int64()),
        pa.field("shards_skipped", pa.int64()),
        pa.field("shards_failed", pa.int64()),
        pa.field("images_inferred", pa.int64()),
        pa.field("images_ok", pa.int64()),
        pa.field("images_error", pa.int64()),
        pa.field("images_retryable", pa.int64()),
        pa.field("objects_written", pa.int64()),
        pa.field("error_types", pa.string()),  # JSON {error_type: count}
        pa.field("images_per_second", pa.float64()),
        pa.field("images_version", pa.int64()),
        pa.field("objects_version", pa.int64()),
        pa.field("complete", pa.bool_(), nullable=False),
    ]
)


def runs_row(summary: dict[str, Any]) -> pa.Table:
    """One ``runs`` row from a run summary (unknown keys ignored, missing ones null)."""
    row = {name: summary.get(name) for name in RUNS_SCHEMA.names}
    for name in ("parameters", "error_types"):
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name], sort_keys=True, default=str)
    for name in ("started_at", "ended_at"):
        if isinstance(row[name], (int, float)):
            row[name] = datetime.fromtimestamp(row[name], timezone.utc)
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)
