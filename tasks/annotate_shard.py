"""Annotate one shard: skip if committed, else infer, write two Parquet files, commit.

The work itself is :func:`run_shard` (plain Python, testable without Prefect);
:data:`annotate_shard` wraps it as a Prefect task that owns retries. The
output store, not Prefect's database, says what is done: a shard is done when
its commit marker exists, and the marker is written only after both Parquet
files are in place. Each file is written to a ``_tmp/`` key and moved into its
final, deterministic key, so a crash or a killed worker at any point leaves
either nothing that counts or whole files that the rerun overwrites under the
same names: no loss, no duplicate rows.

Downloads, decoding and preprocessing run ahead of the model in the
pipeline's own ``predict()`` loop (its loader threads); each ``InputItem``
records what its download saw (etag, size, timings) for the ``images`` rows.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.inputs import InputItem
from pxflow.pipelines.io.storage import Storage

from .credentials import storage_for
from .job import AnnotateJob
from .model_cache import get_pipeline, process_stats
from .rows import RowBuilder, summarize
from .shards import OutputLayout

SHARD_RETRIES = 2


class TransientShardError(RuntimeError):
    """Some downloads failed in a way that may pass on a retry (throttling, 5xx, dropped connections)."""


def read_marker(uri: str, storage: Storage) -> dict[str, Any] | None:
    """The commit marker's summary, or None when the shard is not committed."""
    try:
        return json.loads(storage.read_bytes(uri))
    except InputError as exc:
        if exc.error_type == "not_found":
            return None
        raise


def publish_parquet(table, uri: str, layout: OutputLayout, storage: Storage) -> None:
    """Write ``table`` to a staging key, then move it to ``uri`` (readers never see a partial file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    tmp = layout.tmp_uri(uri.rsplit("/", 1)[-1])
    try:
        storage.write_bytes(tmp, buffer.getvalue().to_pybytes())
        storage.move(tmp, uri)
    except BaseException:
        try:
            storage.delete(tmp)
        except Exception:
            pass
        raise


def run_shard(
    job: AnnotateJob, shard_id: str, uris: Sequence[str], final_attempt: bool = True,
    options: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Annotate ``uris`` into the shard's Parquet files and commit; returns the shard summary.

    ``options`` (one per URI, or None) are per-input predict options from the listing,
    such as a manifest's SAM ``prompt`` column.
    """
    storage = storage_for(job.s3_block)
    layout = job.layout
    marker = layout.marker_uri(shard_id)
    if job.force:
        storage.delete(marker)  # uncommit first: a crash mid-recompute must not look done
    else:
        done = read_marker(marker, storage)
        if done is not None:
            return {**done, "skipped": True}

    started = time.perf_counter()
    pipeline = get_pipeline(job.config, job.model_sha256)
    per_input = options or [None] * len(uris)
    items = [InputItem(uri, storage=storage, options=opts) for uri, opts in zip(uris, per_input, strict=True)]
    builder = RowBuilder(job.run_key, job.pipeline, job.model_name, job.model_sha256, shard_id)
    results = pipeline.predict(items, storage=storage, **job.predict_kwargs)
    for item, result in zip(items, results, strict=True):
        builder.add(item.uri, result, item.meta)
    if not final_attempt and any(item.meta.get("transient") for item in items):
        failed = sum(1 for item in items if item.meta.get("transient"))
        raise TransientShardError(f"shard {shard_id}: {failed} download(s) failed transiently; retrying the shard")

    objects, images = builder.tables()
    files = {}
    for table_name, table in (("objects", objects), ("images", images)):
        files[table_name] = layout.part_uri(table_name, shard_id)
        publish_parquet(table, files[table_name], layout, storage)
    summary = {
        "shard_id": shard_id,
        "run_key": job.run_key,
        **summarize(builder.images),
        "files": files,
        "seconds": round(time.perf_counter() - started, 3),
        "committed_at": time.time(),
        **process_stats(),
    }
    storage.write_bytes(marker, json.dumps(summary, indent=1).encode())  # the commit: always last
    return {**summary, "skipped": False}


def _annotate_shard(
    job: AnnotateJob, shard_id: str, shard_index: int, uris: list[str], options: list[dict[str, Any] | None] | None = None
) -> dict[str, Any]:
    from prefect.runtime import task_run

    final = (task_run.run_count or 1) > SHARD_RETRIES
    summary = run_shard(job, shard_id, uris, final_attempt=final, options=options)
    summary["shard_index"] = shard_index
    return summary


def _make_task():
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    # NO_CACHE: the commit marker is the cache (it survives Prefect's database and works across flows).
    return task(
        _annotate_shard,
        name="annotate-shard",
        task_run_name="shard-{shard_index}-{shard_id}",
        retries=SHARD_RETRIES,
        retry_delay_seconds=[2, 10],
        cache_policy=NO_CACHE,
        persist_result=False,
    )


annotate_shard = _make_task()
