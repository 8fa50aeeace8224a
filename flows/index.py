"""Prefect flows maintaining versioned PP-ShiTu indexes under an index root (``<root>/<name>/vNNNNNN`` + ``CURRENT``).

- ``index_build(root, name, gallery)``: a new version from a whole gallery (another index type
  or metric reuses every stored feature);
- ``index_append(root, name, gallery)``: the gallery's images added with fresh ids;
- ``index_remove(root, name, ids=..., labels=...)``;
- ``index_rollback(root, name, version)``: a new version with exactly that version's content;
- ``index_gc(root, name, keep)``: old published versions and the orphans CURRENT has passed
  removed (never CURRENT, a version above it, or a pinned version);
- ``index_refresh(root, name, gallery_prefix)``: exactly the images added since the current
  version (by uri + etag, as its manifest recorded) appended, and those deleted removed.

Gallery features are computed once, into the ``features`` Delta table (``<root>/_lake``), by
``index-features-shard`` tasks; the flows that embed a gallery (build, append, refresh) take
how in one :class:`~.options.FeatureOptions` parameter (model, device, runner, shards).

One writer per index name: each writing flow holds a slot of the Prefect global concurrency
limit ``pxflow-index-<name>`` (created with limit 1 when missing) while it publishes, so two
scheduled runs queue instead of racing. Correctness does not depend on it: publishing is a
compare-and-swap on ``CURRENT`` and a losing writer redoes its operation on the winner's
version; the limit only avoids that wasted work.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import flow

from pxflow.tasks.credentials import storage_for
from pxflow.tasks.features import feature_model, features_shard, gallery_entries, missing_entries, shard_entries
from pxflow.tasks.index_ops import (
    features_lake,
    index_append_task,
    index_build_task,
    index_gc_task,
    index_refresh_task,
    index_remove_task,
    index_rollback_task,
)

from .inline import call_task, in_flow_run, map_task, run_logger
from .options import FeatureOptions
from .runners import get_runner

WRITER_LIMIT_PREFIX = "pxflow-index-"
#: seconds a writer's slot lease lasts between renewals (Prefect renews it while the flow runs)
WRITER_LEASE_S = 300.0


def writer_limit_name(name: str) -> str:
    return f"{WRITER_LIMIT_PREFIX}{name}"


def ensure_writer_limit(name: str) -> str:
    """Create the global concurrency limit ``pxflow-index-<name>`` (limit 1) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    limit = writer_limit_name(name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(limit)
        except Exception:
            with contextlib.suppress(Exception):  # another flow created it meanwhile
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    return limit


@contextlib.contextmanager
def one_writer(name: str):
    """Hold the index name's writer slot (one at a time per name) in a flow run.

    Run inline (no Prefect API, :mod:`.inline`) there is no limit to hold; publishing stays a
    compare-and-swap, so a concurrent writer still never loses an update.
    """
    from prefect.concurrency.sync import concurrency

    if not in_flow_run():
        yield
        return
    limit = ensure_writer_limit(name)
    with concurrency(limit, occupy=1, lease_duration=WRITER_LEASE_S, strict=True):
        yield


def _run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


@flow(name="index-features", validate_parameters=False)
def compute_features(
    entries: list[dict[str, Any]], lake_root: str, model_spec: dict[str, Any], s3_block: str | None, shard_size: int,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Embed the gallery entries that have no stored feature yet, one task per shard (``concurrency``: inline only)."""
    calls = [(shard, lake_root, model_spec, s3_block) for shard in shard_entries(entries, shard_size)]
    computed, failed = 0, []
    for result in map_task(features_shard, calls, concurrency):
        computed += result["computed"]
        failed += result["failed"]
    return {"computed": computed, "failed": failed}


def _features_for(
    root: str, gallery: str, options: FeatureOptions, s3_block: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], str]:
    """``(gallery entries, model description, feature stats, lake root)``: missing features computed."""
    logger = run_logger()
    storage = storage_for(s3_block)
    entries = gallery_entries(gallery, storage, options.gallery_root)
    lake = features_lake(root, s3_block, options.features_root)
    spec = options.model_spec()
    model = feature_model(**spec).describe()
    todo = missing_entries(lake, entries, model["sha256"])
    stats = {"computed": 0, "failed": []}
    if todo and in_flow_run():
        sub = compute_features.with_options(task_runner=get_runner(options.runner).task_runner(options.concurrency))
        stats = sub(todo, lake.output, spec, s3_block, options.shard_size)
    elif todo:  # inline (the CLI without a Prefect server): the thread runner's work, in this process
        stats = compute_features.fn(todo, lake.output, spec, s3_block, options.shard_size, options.concurrency)
    absent = [{"uri": e["uri"], "error_type": "not_found", "message": "no such image"} for e in entries if e["etag"] is None]
    stats = {"computed": stats["computed"], "reused": len(entries) - len(todo) - len(absent), "failed": absent + stats["failed"]}
    for f in stats["failed"]:
        logger.warning("gallery image skipped: %s: %s: %s", f["uri"], f["error_type"], f["message"])
    return entries, model, stats, lake.output


def _feature_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The feature side of a writing flow's result."""
    return {"features_computed": stats["computed"], "features_reused": stats["reused"], "skipped": stats["failed"]}


@flow(name="index-build")
def index_build(
    root: str,
    name: str,
    gallery: str,
    index_type: str = "HNSW32",
    metric_type: str = "IP",
    features: FeatureOptions | None = None,
    s3_block: str | None = None,
) -> dict[str, Any]:
    """A new version of ``name`` over the whole gallery (features from the table; missing ones computed)."""
    entries, model, stats, lake_root = _features_for(root, gallery, features or FeatureOptions(), s3_block)
    inputs = {"gallery": gallery, "images": len(entries)}
    with one_writer(name):
        out = call_task(index_build_task, root, name, lake_root, entries, model, index_type, metric_type, inputs, s3_block, _run_id())
    return {**out, **_feature_stats(stats)}


@flow(name="index-append")
def index_append(
    root: str, name: str, gallery: str, features: FeatureOptions | None = None, s3_block: str | None = None
) -> dict[str, Any]:
    """The gallery's images appended to the current version, with fresh ids."""
    entries, model, stats, lake_root = _features_for(root, gallery, features or FeatureOptions(), s3_block)
    inputs = {"gallery": gallery, "images": len(entries)}
    with one_writer(name):
        out = call_task(index_append_task, root, name, lake_root, entries, model, inputs, s3_block, _run_id())
    return {**out, **_feature_stats(stats)}


@flow(name="index-remove")
def index_remove(
    root: str, name: str, ids: list[int] | None = None, labels: list[str] | None = None, s3_block: str | None = None
) -> dict[str, Any]:
    """Remove ids and/or every entry of some labels; ids or labels the index lacks fail the flow, no version made."""
    with one_writer(name):
        return call_task(index_remove_task, root, name, ids, labels, s3_block, _run_id())


@flow(name="index-rollback")
def index_rollback(root: str, name: str, version: str, s3_block: str | None = None) -> dict[str, Any]:
    """Publish a new version with exactly ``version``'s vectors, ids and labels."""
    with one_writer(name):
        return call_task(index_rollback_task, root, name, version, s3_block, _run_id())


@flow(name="index-gc")
def index_gc(root: str, name: str, keep: int = 5, s3_block: str | None = None) -> dict[str, Any]:
    """Delete published versions beyond the newest ``keep`` and the orphans below CURRENT (see ``IndexRepo.gc``)."""
    with one_writer(name):
        return call_task(index_gc_task, root, name, keep, s3_block)


@flow(name="index-refresh")
def index_refresh(
    root: str, name: str, gallery_prefix: str, features: FeatureOptions | None = None, s3_block: str | None = None
) -> dict[str, Any]:
    """Append the gallery images added since the current version and remove those deleted (or changed)."""
    from pxflow.pipelines.retrieval.versions import NothingToChange

    entries, model, stats, lake_root = _features_for(root, gallery_prefix, features or FeatureOptions(), s3_block)
    inputs = {"gallery": gallery_prefix, "images": len(entries)}
    with one_writer(name):
        try:
            out = call_task(index_refresh_task, root, name, lake_root, entries, model, inputs, s3_block, _run_id())
        except NothingToChange as exc:
            run_logger().info("%s", exc)
            out = {"name": name, "version": None, "unchanged": True}
    return {**out, **_feature_stats(stats)}
