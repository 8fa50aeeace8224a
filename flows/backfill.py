"""The ``backfill`` flow: one ``annotate`` subflow per Hive date partition between two dates.

The input prefix holds ``dt=YYYY-MM-DD/`` partitions; each one in
``[start, end]`` is annotated into the same partition of the output
(``<output>/objects/dt=.../run=<key>/...``). A partition is done when its run
manifest for this run key says ``complete``; done partitions are skipped (pass
``force`` to recompute), so a rerun after a failure continues where it stopped.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from prefect import flow, get_run_logger

from pxflow.pipelines.io import storage
from pxflow.pipelines.io.uri import join_uri
from pxflow.tasks.annotate_shard import read_marker
from pxflow.tasks.shards import DEFAULT_SHARD_SIZE, OutputLayout

from .annotate import DEFAULT_DOWNLOAD_WORKERS, annotate, prepare_job

PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


RELATIVE_DAY = re.compile(r"^today(?:-(\d+))?$")


def parse_day(text: str, today: dt.date | None = None) -> dt.date:
    """``YYYY-MM-DD``, ``today``, ``yesterday`` or ``today-N`` (UTC): schedules pass relative days."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    text = text.strip().lower()
    if text == "yesterday":
        return today - dt.timedelta(days=1)
    match = RELATIVE_DAY.match(text)
    if match:
        return today - dt.timedelta(days=int(match.group(1) or 0))
    return dt.date.fromisoformat(text)


def date_partitions(prefix: str, start: str, end: str) -> list[str]:
    """Names of the ``dt=YYYY-MM-DD`` children of ``prefix`` with ``start <= date <= end``, sorted."""
    first, last = parse_day(start), parse_day(end)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    out = []
    for name in storage.list_children(prefix):
        match = PARTITION.match(name)
        if match and first <= dt.date.fromisoformat(match.group(1)) <= last:
            out.append(name)
    return out


@flow(name="backfill", log_prints=True)
def backfill(
    input: str,
    output: str,
    start: str,
    end: str,
    pipeline: str = "object_detection",
    shard_size: int = DEFAULT_SHARD_SIZE,
    concurrency: int = 2,
    runner: str = "thread",
    force: bool = False,
    model_dir: str | None = None,
    threshold: float | dict | None = None,
    backend: str | None = None,
    predict_kwargs: dict | None = None,
    download_workers: int = DEFAULT_DOWNLOAD_WORKERS,
    dask_address: str | None = None,
    s3_block: str | None = None,
) -> dict[str, Any]:
    """Annotate every date partition of ``input`` in ``[start, end]``; skip partitions already complete."""
    logger = get_run_logger()
    partitions = date_partitions(input, start, end)
    logger.info("%d partition(s) between %s and %s under %s", len(partitions), start, end, input)
    done, ran, failed = [], [], []
    key = prepare_job(output, pipeline, model_dir, threshold, backend, predict_kwargs).run_key if partitions else ""
    for name in partitions:
        layout = OutputLayout(output, key, name)
        previous = None if force else read_marker(layout.manifest_uri())
        if previous and previous.get("complete"):
            logger.info("partition %s already complete (%d images); skipped", name, previous["rows_images"])
            done.append(name)
            continue
        state = annotate(
            input=join_uri(input, name), output=output, pipeline=pipeline, shard_size=shard_size,
            concurrency=concurrency, runner=runner, force=force, model_dir=model_dir, threshold=threshold,
            backend=backend, predict_kwargs=predict_kwargs, partition=name, download_workers=download_workers,
            dask_address=dask_address, s3_block=s3_block, return_state=True,
        )
        (ran if state.is_completed() else failed).append(name)
    summary = {"partitions": partitions, "skipped": done, "annotated": ran, "failed": failed}
    if failed:
        raise RuntimeError(f"backfill: partitions failed: {failed} (rerun to resume them)")
    return summary
