"""Whole-partition operations on the output tables: the ``--replace`` swap and ``--prune``.

The ``--replace`` swap is two Delta commits (``objects``, then ``images``) and Delta has no
transaction across tables, so a process killed between them would leave ``images`` rows
(``num_objects``) disagreeing with the ``objects`` rows, which a plain rerun never notices:
planning reads ``images``, whose rows still look done. The swap is therefore made redoable:

1. every shard commits into the run's own staging tables ``<output>/_staging/<run_id>/``;
2. once they all have, the *swap intent* ``_staging/<run_id>/_swap.json`` (run key and
   partition) is written, in one atomic put, before the first table is touched;
3. ``objects`` then ``images`` are swapped, each one commit that replaces every row of
   (run key, partition) by the staged rows; that is idempotent: swapping the same staged
   snapshot again gives the same rows;
4. the intent is deleted, then the staged files.

A kill before 2 leaves the output untouched (staged files become garbage for ``lake vacuum``).
A kill anywhere in 3 leaves the intent and the whole staging: the next ``annotate`` run of the
same run key and partition (plain, ``--force`` or ``--replace``; ``backfill`` runs one per
partition) calls :func:`finish_pending_swaps` before it plans, which redoes both swaps from the
staged snapshot and so ends exactly where an uninterrupted swap would have. A kill in 4 leaves
consistent tables and, at worst, staged files with no intent: garbage. ``lake vacuum`` never
removes a staging that holds an intent (it is the only copy of a decided swap) and removes the
rest once nothing in them changed for the retention (:func:`stale_staging`), which a running
replace, committing a shard every few seconds or holding an intent, never is.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable

from pxflow.pipelines.hooks import checkpoint
from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.io.uri import join_uri

from .lake import Lake, in_list, parse_partition, sql_literal

log = logging.getLogger(__name__)
#: URIs per delete predicate (keeps each predicate a reasonable size)
DELETE_CHUNK = 1000
#: ``<output>/_staging/<run_id>/``: where a ``--replace`` run's shards commit
STAGING = "_staging"
#: the swap intent inside a run's staging folder (present from before the first swap until both are done)
SWAP_INTENT = "_swap.json"
#: the swap order: ``images`` last, as in a shard's commit (planning reads ``images``)
SWAP_TABLES = ("objects", "images")


def staging_for(output: str, run_id: str) -> str:
    """The staging root of one ``--replace`` run."""
    return join_uri(output, STAGING, run_id)


def _scope(run_key: str, partition: str | None) -> str:
    predicate = f"run_key = {sql_literal(run_key)}"
    part = parse_partition(partition)
    if part:
        predicate += f" AND {part[0]} = {sql_literal(part[1])}"
    return predicate


def swap_in_staging(lake: Lake, staging: Lake, run_key: str, partition: str | None) -> dict[str, int | None]:
    """Replace every row of (run key, partition) in ``lake`` by the staged rows: one commit per table.

    Readers see the old partition or the new one in each table. Across the two tables the swap is
    made whole by its intent (module docstring): written here before the first commit, removed
    after the second, so a kill in between is finished by the next run (:func:`finish_pending_swaps`).
    The intent pins the staged tables' versions, so a redo swaps exactly the same snapshot, and
    tells "staged nothing" (the partition becomes empty) from "staging gone" (never a delete).
    """
    intent = {"run_key": run_key, "partition": partition,
              "staged": {table: staging.version(table) for table in SWAP_TABLES}}
    staging.storage.write_bytes(join_uri(staging.output, SWAP_INTENT), json.dumps(intent).encode())
    return _swap(lake, staging, intent)


def _swap(lake: Lake, staging: Lake, intent: dict[str, Any]) -> dict[str, int | None]:
    """Both table swaps from the staged snapshot the intent pins (idempotent), then the intent and the staged files go."""
    run_key, partition = intent["run_key"], intent["partition"]
    part = parse_partition(partition)
    marker = join_uri(staging.output, SWAP_INTENT)
    versions: dict[str, int | None] = {}
    for n, table in enumerate(SWAP_TABLES):
        if n:
            checkpoint("between_replace_swaps")
        pinned = intent["staged"][table]
        if pinned is None:  # the run staged no rows for this table: the partition's rows go
            versions[table] = lake.delete(table, _scope(run_key, partition))
            continue
        error: Exception | None = None
        try:
            staged = staging.dataset(table, pinned)
        except Exception as exc:  # a log half deleted reads as an error, a log gone as None
            staged, error = None, exc
        if staged is None:
            if not staging.storage.exists(marker):
                return versions  # another run finished this swap and removed its staging meanwhile
            raise RuntimeError(f"{staging.output}/{table} version {pinned} (a decided --replace swap) cannot be read: "
                               f"{error or 'no table'}") from error
        # streamed, never loaded whole; a fresh reader per attempt, should the commit be redone
        versions[table] = lake.write(table, lambda: staged.scanner().to_reader(), predicate=_scope(run_key, partition),
                                     partition_by=[part[0]] if part else None)
    staging.storage.delete(marker)  # first: staged files without an intent are garbage, never a pending swap
    remove_tree(staging.storage, staging.output)
    return versions


def pending_swaps(lake: Lake) -> list[tuple[str, dict[str, Any]]]:
    """``(staging root, intent)`` of every swap decided under ``lake.output`` and not finished."""
    found = []
    for name in lake.storage.list_children(join_uri(lake.output, STAGING)):
        root = join_uri(lake.output, STAGING, name)
        intent = join_uri(root, SWAP_INTENT)
        if lake.storage.exists(intent):
            found.append((root, json.loads(lake.storage.read_bytes(intent))))
    return found


def finish_pending_swaps(lake: Lake, run_key: str, partition: str | None) -> list[str]:
    """Redo the swaps that a killed ``--replace`` of (run key, partition) decided; returns their staging roots.

    Called by every run before it plans, so the rows it plans against are never a half swap.
    Only the run's own key and partition: another key's or partition's swap may be in progress
    in another process right now, and its rows are not this run's to plan.
    """
    done = []
    for root, intent in pending_swaps(lake):
        if intent.get("run_key") == run_key and intent.get("partition") == partition:
            log.warning("finishing the --replace swap left by a killed run (%s)", root)
            _swap(lake, Lake(root, lake.storage), intent)
            done.append(root)
    return done


def stale_staging(lake: Lake, retention_hours: float) -> dict[str, int]:
    """``{staging root: files}`` under ``lake.output`` that nothing changed for ``retention_hours`` and hold no intent.

    A running replace commits a shard into its staging every few seconds (or holds an intent while it
    swaps), so these are the leftovers of failed or killed runs. A staging that holds an intent is
    never stale: it is the only copy of rows a swap has decided (:func:`finish_pending_swaps`).
    """
    from pyarrow import fs

    cutoff = time.time() - retention_hours * 3600
    pending = {root for root, _ in pending_swaps(lake)}
    stale = {}
    for name in lake.storage.list_children(join_uri(lake.output, STAGING)):
        root = join_uri(lake.output, STAGING, name)
        if root in pending:
            continue
        filesystem, path = lake.storage.arrow_filesystem(root)
        infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
        times = [i.mtime.timestamp() for i in infos if i.type == fs.FileType.File and i.mtime is not None]
        if not times or max(times) < cutoff:
            stale[root] = len(times)
    return stale


def remove_tree(storage: Storage, root: str) -> None:
    """Delete everything under ``root`` (a staging folder), the folder included; a missing one is fine."""
    filesystem, path = storage.arrow_filesystem(root)
    try:
        filesystem.delete_dir(path)
    except FileNotFoundError:
        pass


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
