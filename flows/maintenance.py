"""Delta table maintenance of an ``annotate`` output: compact small files, then vacuum old ones.

Every shard commits its own small Parquet files (``tasks/lake.py``), so a large run leaves
thousands of files per table. :func:`optimize_tables` rewrites them into few large files
(``DeltaTable.optimize.compact()``, one commit per table, rows unchanged) and writes a
checkpoint of the log. The replaced files stay on storage, referenced by the older table
versions, until :func:`vacuum_tables` deletes the ones that were removed from the table
more than ``retention_hours`` ago. Vacuuming a whole output also removes the ``_staging/``
folders that failed or killed ``--replace`` runs left (:func:`vacuum_staging`).

Retention and readers: a reader holds the file list of the version it opened; vacuum only
deletes files that no version newer than ``retention_hours`` ago references, so any reader
that opened the table less than ``retention_hours`` ago is safe (and so is time travel to such a
version). The default is 168 h (a week, Delta's own default); anything below
:data:`MIN_RETENTION_HOURS` (1 h) is refused unless ``force``. Vacuum is NOT a dry run by
default (the retention makes it safe); ``dry_run=True`` lists the files it would delete.

:func:`lake_maintenance` (the ``lake-maintenance`` deployment) runs both, weekly.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from prefect import flow

from pxflow.tasks.credentials import storage_for
from pxflow.tasks.lake import TABLES, WRITER_COMPRESSION, Lake
from pxflow.tasks.maintenance import STAGING, pending_swaps, remove_tree, stale_staging

from .inline import run_logger

DEFAULT_RETENTION_HOURS = 168.0
#: below this, vacuum could delete files a running reader (or an in-flight optimize) still needs
MIN_RETENTION_HOURS = 1.0
COMMIT_ATTEMPTS = 3


class RetentionTooShortError(ValueError):
    """A vacuum retention below :data:`MIN_RETENTION_HOURS` without ``force``."""


def check_retention(retention_hours: float, force: bool = False) -> float:
    """``retention_hours`` when it is safe (or forced); :class:`RetentionTooShortError` otherwise."""
    hours = float(retention_hours)
    if hours < 0:
        raise RetentionTooShortError(f"retention must be >= 0 hours, got {hours}")
    if hours < MIN_RETENTION_HOURS and not force:
        raise RetentionTooShortError(
            f"retention {hours} h is below the {MIN_RETENTION_HOURS} h floor: files that readers opened less than "
            f"{hours} h ago may still need would be deleted (pass force to do it anyway)"
        )
    return hours


def _tables(lake: Lake, names: Sequence[str] | None) -> list[tuple[str, Any]]:
    wanted = list(names) if names else list(TABLES)
    unknown = sorted(set(wanted) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown tables {unknown}; tables: {list(TABLES)}")
    found = [(name, lake.open(name)) for name in wanted]
    return [(name, table) for name, table in found if table is not None]


def existing_tables(output: str, s3_block: str | None = None) -> list[str]:
    """The Delta tables (of ``images``/``objects``/``runs``) present under ``output``."""
    return [name for name, _ in _tables(Lake(output.rstrip("/"), storage_for(s3_block)), None)]


def _retrying(action, lake: Lake, name: str):
    """Run ``action(table)`` on a freshly opened table, again on a commit conflict (a shard committed meanwhile)."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return action(lake.open(name))
        except CommitFailedError:
            if attempt == COMMIT_ATTEMPTS:
                raise
            time.sleep(attempt)


def optimize_lake(lake: Lake, tables: Sequence[str] | None = None, target_size: int | None = None,
                  checkpoint: bool = True) -> dict[str, dict[str, Any]]:
    """Compact each existing table's small files (plain function; the flow wraps it)."""
    from deltalake import WriterProperties

    report: dict[str, dict[str, Any]] = {}
    for name, table in _tables(lake, tables):
        before = len(table.file_uris())

        def compact(current):
            return current.optimize.compact(target_size=target_size,
                                            writer_properties=WriterProperties(compression=WRITER_COMPRESSION))

        metrics = _retrying(compact, lake, name)
        after = lake.open(name)
        if checkpoint and metrics.get("numFilesRemoved", 0):
            after.create_checkpoint()
        report[name] = {
            "files_before": before,
            "files_after": len(after.file_uris()),
            "files_removed": int(metrics.get("numFilesRemoved", 0)),
            "files_added": int(metrics.get("numFilesAdded", 0)),
            "version": after.version(),
        }
    return report


def vacuum_lake(lake: Lake, retention_hours: float = DEFAULT_RETENTION_HOURS, dry_run: bool = False,
                force: bool = False, full: bool = False, tables: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Delete files no table version of the last ``retention_hours`` references (plain function)."""
    import math

    hours = check_retention(retention_hours, force)
    report: dict[str, dict[str, Any]] = {}
    for name, table in _tables(lake, tables):
        deleted = table.vacuum(
            retention_hours=int(math.ceil(hours)),  # delta-rs takes whole hours: round up, never delete more
            dry_run=dry_run,
            # our own floor (MIN_RETENTION_HOURS) replaces delta-rs' check against the table's
            # delta.deletedFileRetentionDuration (a week unless the table sets it)
            enforce_retention_duration=False,
            full=full,
        )
        report[name] = {"files_to_delete" if dry_run else "files_deleted": len(deleted),
                        "files": sorted(deleted)[:50], "version": lake.open(name).version()}
    if not tables:  # the whole output: also the _staging/ folders of --replace runs
        report[STAGING] = vacuum_staging(lake, hours, dry_run)
    return report


def vacuum_staging(lake: Lake, retention_hours: float, dry_run: bool = False) -> dict[str, Any]:
    """Remove the ``_staging/<run_id>/`` folders that failed or killed ``--replace`` runs left.

    Same retention as the tables' files: a folder nothing was written to for ``retention_hours``
    belongs to no running replace. One holding a swap intent is kept and reported under
    ``pending_swaps``: it is the only copy of a decided swap, which the next run of its run key
    and partition finishes (:mod:`pxflow.tasks.maintenance`).
    """
    stale = stale_staging(lake, retention_hours)
    if not dry_run:
        for root in stale:
            remove_tree(lake.storage, root)
    return {"files_to_delete" if dry_run else "files_deleted": sum(stale.values()), "folders": sorted(stale),
            "pending_swaps": sorted(root for root, _ in pending_swaps(lake))}


def _lake(output: str, s3_block: str | None) -> Lake:
    return Lake(output.rstrip("/"), storage_for(s3_block))


@flow(name="lake-optimize")
def optimize_tables(output: str, tables: list[str] | None = None, target_size: int | None = None,
                    s3_block: str | None = None) -> dict[str, Any]:
    """Compact the small per-shard files of ``images``/``objects``/``runs`` under ``output``."""
    logger = run_logger()
    report = optimize_lake(_lake(output, s3_block), tables, target_size)
    for name, r in report.items():
        logger.info("%s: %d -> %d files (version %d)", name, r["files_before"], r["files_after"], r["version"])
    return {"output": output, "optimize": report}


@flow(name="lake-vacuum")
def vacuum_tables(output: str, retention_hours: float = DEFAULT_RETENTION_HOURS, dry_run: bool = False,
                  force: bool = False, full: bool = False, tables: list[str] | None = None,
                  s3_block: str | None = None) -> dict[str, Any]:
    """Delete files removed from the tables more than ``retention_hours`` ago (floor :data:`MIN_RETENTION_HOURS`)."""
    logger = run_logger()
    report = vacuum_lake(_lake(output, s3_block), retention_hours, dry_run, force, full, tables)
    for name, r in report.items():
        logger.info("%s: %s %d files", name, "would delete" if dry_run else "deleted",
                    r.get("files_to_delete", r.get("files_deleted", 0)))
    return {"output": output, "retention_hours": retention_hours, "dry_run": dry_run, "vacuum": report}


@flow(name="lake-maintenance")
def lake_maintenance(output: str, optimize: bool = True, vacuum: bool = True,
                     retention_hours: float = DEFAULT_RETENTION_HOURS, dry_run: bool = False,
                     s3_block: str | None = None) -> dict[str, Any]:
    """The weekly job: compact, then vacuum with a safe retention (never forced)."""
    check_retention(retention_hours)  # fail before touching anything
    lake = _lake(output, s3_block)
    result: dict[str, Any] = {"output": output}
    if optimize:
        result["optimize"] = optimize_lake(lake)
    if vacuum:
        result["vacuum"] = vacuum_lake(lake, retention_hours, dry_run)
    run_logger().info("lake maintenance of %s: %s", output, result)
    return result
