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

from pxflow.pipelines.io.uri import join_uri
from pxflow.tasks.annotate_shard import read_marker
from pxflow.tasks.credentials import storage_for
from pxflow.tasks.shards import OutputLayout

from .annotate import annotate, job_for
from .options import AnnotateOptions

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


def date_partitions(prefix: str, start: str, end: str, storage=None) -> list[str]:
    """Names of the ``dt=YYYY-MM-DD`` children of ``prefix`` with ``start <= date <= end``, sorted."""
    first, last = parse_day(start), parse_day(end)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    out = []
    for name in (storage or storage_for(None)).list_children(prefix):
        match = PARTITION.match(name)
        if match and first <= dt.date.fromisoformat(match.group(1)) <= last:
            out.append(name)
    return out


@flow(name="backfill", log_prints=True)
def backfill(input: str, output: str, start: str, end: str, options: AnnotateOptions | None = None) -> dict[str, Any]:
    """Annotate every date partition of ``input`` in ``[start, end]``; skip partitions already complete."""
    options = options or AnnotateOptions()
    logger = get_run_logger()
    storage = storage_for(options.s3_block)
    partitions = date_partitions(input, start, end, storage)
    logger.info("%d partition(s) between %s and %s under %s", len(partitions), start, end, input)
    done, ran, failed = [], [], []
    key = job_for(output, options).run_key if partitions else ""
    for name in partitions:
        layout = OutputLayout(output, key, name)
        previous = None if options.force else read_marker(layout.manifest_uri(), storage)
        if previous and previous.get("complete"):
            logger.info("partition %s already complete (%d images); skipped", name, previous["rows_images"])
            done.append(name)
            continue
        state = annotate(input=join_uri(input, name), output=output, options=options, partition=name, return_state=True)
        (ran if state.is_completed() else failed).append(name)
    summary = {"partitions": partitions, "skipped": done, "annotated": ran, "failed": failed}
    if failed:
        raise RuntimeError(f"backfill: partitions failed: {failed} (rerun to resume them)")
    return summary
