"""What a finished annotate run reports: its ``runs`` table row, its summary and a Prefect artifact."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from pxflow.tasks.job import AnnotateJob
from pxflow.tasks.lake import Lake
from pxflow.tasks.runs import runs_row
from pxflow.tasks.shard_summary import ShardSummary

from .inline import in_flow_run


@dataclass
class RunSummary:
    """What a finished (or stopped) annotate run did: the flow's result, the ``runs`` row, the artifact.

    The flow returns :meth:`as_dict` (its keys are what ``pxflow annotate`` prints, what the
    ``runs`` table stores and what docs/schema.md describes); the code that builds and reads it uses fields.
    """

    run_key: str
    flow_run_id: str
    pipeline: str
    model_name: str
    model_sha256: str
    input: str
    output: str
    partition: str | None
    #: the flow options as JSON (block names, never secrets)
    parameters: dict[str, Any]
    started_at: float
    ended_at: float
    # what planning saw (tasks.plan.PlanStats)
    listed: int
    duplicates: int
    unchanged: int
    changed: int
    retried: int
    new: int
    shards: int
    pruned: int
    shards_planned: int
    shards_committed: int
    shards_skipped: int
    shards_failed: int
    failed_shards: list[dict[str, Any]]
    images_inferred: int
    images_ok: int
    images_error: int
    images_retryable: int
    objects_written: int
    error_types: dict[str, int]
    images_per_second: float | None
    rows_images: int
    missing: list[str]
    complete: bool
    interrupted: bool
    error_rate: float
    max_error_rate: float
    error_budget_exceeded: bool
    worker_pids: list[int]
    #: (pid, model loads of that process) per computed shard
    shard_stats: list[tuple[int, int]]
    tables: dict[str, str]
    images_version: int | None = None
    objects_version: int | None = None
    runs_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_summary(
    job: AnnotateJob, input: str, options: Any, outcome: dict[str, Any], lake: Lake, started: float, run_id: str,
    pruned: int,
) -> RunSummary:
    """Counts, speed, table versions and completeness of a run; appends its ``runs`` row."""
    summaries: list[ShardSummary] = outcome["summaries"]
    computed = [s for s in summaries if not s.skipped]
    error_types: dict[str, int] = {}
    for s in computed:
        for name, count in s.error_types.items():
            error_types[name] = error_types.get(name, 0) + count
    current = lake.annotated(job.run_key, job.partition)
    missing = sorted(outcome["listed_uris"] - set(current))
    retryable = sorted(u for u in outcome["listed_uris"] if current.get(u, (None, False))[1])
    ended = time.time()
    inferred = sum(s.n_inputs for s in computed)
    errors = sum(s.n_error for s in computed)
    summary = RunSummary(
        run_key=job.run_key,
        flow_run_id=run_id,
        pipeline=job.pipeline,
        model_name=job.model_name,
        model_sha256=job.model_sha256,
        input=input,
        output=job.output,
        partition=job.partition,
        parameters=options.model_dump(mode="json"),
        started_at=started,
        ended_at=ended,
        **outcome["plan"],
        pruned=pruned,
        shards_planned=outcome["plan"]["shards"],
        shards_committed=len(computed),
        shards_skipped=len(summaries) - len(computed),
        shards_failed=len(outcome["failures"]),
        failed_shards=outcome["failures"],
        images_inferred=inferred,
        images_ok=sum(s.n_ok for s in computed),
        images_error=errors,
        images_retryable=len(retryable),
        objects_written=sum(s.n_objects for s in computed),
        error_types=error_types,
        images_per_second=round(inferred / (ended - started), 3) if inferred and ended > started else None,
        rows_images=len(current),
        missing=missing,
        complete=not outcome["failures"] and not missing and not retryable and not outcome.get("interrupted"),
        interrupted=bool(outcome.get("interrupted")),
        **error_budget(inferred, errors, getattr(options, "max_error_rate", 1.0)),
        worker_pids=sorted({s.pid for s in computed if s.pid is not None}),
        shard_stats=[(s.pid, s.model_loads) for s in computed if s.pid is not None],
        tables={name: lake.location(name)[0] for name in ("images", "objects", "runs")},
    )
    summary.images_version = lake.version("images")
    summary.objects_version = lake.version("objects")
    summary.runs_version = lake.append("runs", runs_row(summary.as_dict()))
    return summary


def error_budget(inferred: int, errors: int, max_error_rate: float) -> dict[str, Any]:
    """The run's error rate over the inputs it inferred, and whether it broke the budget.

    Every listed input getting its row is not success when the rows are all errors (a label file
    given as a manifest: every path ``not_found``): a run where every inferred input failed, or
    more than ``max_error_rate`` of them, exceeds the budget. A run that inferred nothing has none.
    """
    rate = errors / inferred if inferred else 0.0
    return {"error_rate": round(rate, 4), "max_error_rate": max_error_rate,
            "error_budget_exceeded": bool(inferred) and (errors == inferred or rate > max_error_rate)}


def publish_summary(summary: RunSummary) -> None:
    """A Prefect markdown artifact: what the run did and which table versions hold its output.

    Only in a flow run: an artifact needs a Prefect API (inline, the ``runs`` row and the summary say the same)."""
    if not in_flow_run():
        return
    from prefect.artifacts import create_markdown_artifact

    rows = [
        ("listed inputs", summary.listed), ("duplicates in the listing", summary.duplicates),
        ("unchanged (skipped)", summary.unchanged), ("new", summary.new), ("changed", summary.changed),
        ("retried", summary.retried), ("pruned", summary.pruned), ("inferred", summary.images_inferred),
        ("errors", summary.images_error), ("retryable errors", summary.images_retryable),
        ("objects written", summary.objects_written),
        ("shards committed / planned", f"{summary.shards_committed} / {summary.shards_planned}"),
        ("failed shards", summary.shards_failed), ("images/s", summary.images_per_second),
    ]
    rows += [(f"error: {k}", v) for k, v in sorted(summary.error_types.items())]
    tables = summary.tables
    verdict = "complete: every listed input has its row" if summary.complete else "INCOMPLETE: rerun to finish"
    if summary.interrupted:
        verdict = "INTERRUPTED: stopped planning new shards; rerun to finish"
    elif summary.error_budget_exceeded:
        verdict += f"; ERROR BUDGET EXCEEDED: error rate {summary.error_rate} (max {summary.max_error_rate})"
    lines = [
        f"# annotate `{summary.pipeline}` / `{summary.model_name}`",
        f"run key `{summary.run_key}`{' partition `' + summary.partition + '`' if summary.partition else ''}: **{verdict}**",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"- images table: `{tables['images']}` version **{summary.images_version}**",
        f"- objects table: `{tables['objects']}` version **{summary.objects_version}**",
        f"- runs table: `{tables['runs']}` version **{summary.runs_version}**",
    ]
    key = f"annotate-{summary.run_key}" + (f"-{_slug(summary.partition)}" if summary.partition else "")
    create_markdown_artifact(markdown="\n".join(lines), key=key,
                             description=f"annotate run {summary.run_key}")


def _slug(text: str) -> str:
    """A partition (``dt=2024-01-01``) as artifact-key characters (lowercase letters, digits, dashes)."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
