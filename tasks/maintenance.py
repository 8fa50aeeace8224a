"""Whole-partition operations on the output tables: the ``--replace`` swap and ``--prune``."""

from __future__ import annotations

import logging
from typing import Iterable

from .lake import Lake, in_list, parse_partition, sql_literal

log = logging.getLogger(__name__)
#: URIs per delete predicate (keeps each predicate a reasonable size)
DELETE_CHUNK = 1000


def _scope(run_key: str, partition: str | None) -> str:
    predicate = f"run_key = {sql_literal(run_key)}"
    part = parse_partition(partition)
    if part:
        predicate += f" AND {part[0]} = {sql_literal(part[1])}"
    return predicate


def swap_in_staging(lake: Lake, staging: Lake, run_key: str, partition: str | None) -> dict[str, int]:
    """Replace every row of (run key, partition) in ``lake`` by the staged rows: one commit per table.

    Readers see the old partition or the new one, never a mix; the staged tables are then
    left for ``lake vacuum`` / deletion (they are under ``_staging/``, which readers never open).
    """
    part = parse_partition(partition)
    versions = {}
    for table in ("objects", "images"):
        staged = staging.dataset(table)
        if staged is None:
            continue
        # streamed, never loaded whole; a fresh reader per attempt, should the commit be redone
        versions[table] = lake.write(table, lambda: staged.scanner().to_reader(), predicate=_scope(run_key, partition),
                                     partition_by=[part[0]] if part else None)
    for info in list(staging.storage.list_objects(staging.output)):  # swapped in: the staged files are garbage
        staging.storage.delete(info.uri)
    return versions


def prune_missing(lake: Lake, run_key: str, partition: str | None, listed: Iterable[str]) -> int:
    """Delete the rows of inputs no longer listed (both tables); returns how many inputs were pruned."""
    listed = set(listed)
    gone = sorted(set(lake.annotated(run_key, partition)) - listed)
    for start in range(0, len(gone), DELETE_CHUNK):
        chunk = gone[start : start + DELETE_CHUNK]
        for table in ("objects", "images"):
            lake.delete(table, f"{_scope(run_key, partition)} AND {in_list('image_uri', chunk)}")
    if gone:
        log.info("pruned %d input(s) no longer listed", len(gone))
    return len(gone)
