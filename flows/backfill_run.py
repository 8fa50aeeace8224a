"""The ``backfill`` run: one ``annotate`` run (a subflow in a flow run) per Hive date partition between two dates.

The input prefix holds ``dt=YYYY-MM-DD/`` partitions; each one in ``[start, end]`` is
annotated into the same partition (the ``dt`` column) of the output tables. Every
partition is planned incrementally, so a rerun skips what is done, finishes what a
failure left, and picks up a late file in an old partition (just that file). A ``dt=``
folder with no files is an empty partition (listed under ``empty`` in the summary), not
a failure. One Prefect artifact per partition (its ``annotate`` subflow's) plus this
flow's summary. Run inline (the CLI without a server, :mod:`.inline`), each partition's
``annotate`` body runs inline too, there are no artifacts and Prefect is not imported; this module
is the body, :mod:`pxflow.flows.backfill` makes it the ``backfill`` flow.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pxflow.pipelines.io.uri import join_uri
from pxflow.tasks.credentials import storage_for
from pxflow.tasks.run_plan import RunPlan

from .annotate_run import annotate_run
from .inline import flow_state, in_flow_run, run_logger
from .interrupt import stop_requested
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


def backfill_run(input: str, output: str, start: str, end: str, options: AnnotateOptions | None = None,
                 plan: RunPlan | None = None) -> dict[str, Any]:
    """Annotate every date partition of ``input`` in ``[start, end]``, incrementally.

    Args:
        input: prefix holding dt=YYYY-MM-DD/ partitions (local folder or s3://)
        output: output root of the Delta tables; each partition lands in its dt value
        start: first date: YYYY-MM-DD, today, yesterday or today-N (UTC)
        end: last date (inclusive), same spellings as start
        options: how to annotate (pipeline, model, threshold, shards, runner, device ...)
        plan: the run plan the CLI computed for these options (each partition's subflow uses it, for its partition)
    """
    options = options or AnnotateOptions()
    logger = run_logger()
    partitions = date_partitions(input, start, end, storage_for(options.s3_block))
    logger.info("%d partition(s) between %s and %s under %s", len(partitions), start, end, input)
    # a dt= folder that exists but holds nothing is an empty partition, not a typo: its subflow is a
    # complete run with nothing to do (a rerun could never "resume" it)
    per_options = options.model_copy(update={"allow_empty": True})
    per_partition: list[dict[str, Any]] = []
    failed = []
    annotate = annotate_run  # inline: each partition's body in this thread; in a flow run, a subflow run
    if in_flow_run():
        from .annotate import annotate
    for name in partitions:
        if stop_requested():  # SIGTERM: no new partition; the ones not started are reported as failed
            failed.append(name)
            per_partition.append({"partition": name, "listed": None, "inferred": None, "unchanged": None, "errors": None})
            continue
        state = flow_state(annotate, input=join_uri(input, name), output=output, options=per_options, partition=name,
                           plan=plan.for_partition(name) if plan is not None else None)
        if state.is_completed():
            result = state.result()
            per_partition.append({"partition": name, "listed": result["listed"], "inferred": result["images_inferred"],
                                  "unchanged": result["unchanged"], "errors": result["images_error"]})
        else:  # why, in the log (inline there is no subflow run whose state would show it)
            logger.warning("partition %s failed: %s", name, state.message)
            failed.append(name)
            per_partition.append({"partition": name, "listed": None, "inferred": None, "unchanged": None, "errors": None})
    if in_flow_run():  # an artifact needs a Prefect API
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table=per_partition, key="backfill-summary",
                              description=f"backfill {start}..{end}: {len(partitions)} partition(s), {len(failed)} failed")
    summary = {"partitions": partitions, "per_partition": per_partition, "failed": failed,
               "annotated": [p["partition"] for p in per_partition if p["inferred"]],
               "unchanged": [p["partition"] for p in per_partition if p["inferred"] == 0 and p["listed"]],
               "empty": [p["partition"] for p in per_partition if p["listed"] == 0],
               "complete": not failed}
    if failed:
        raise RuntimeError(f"backfill: partitions failed: {failed} (rerun to resume them)")
    return summary
