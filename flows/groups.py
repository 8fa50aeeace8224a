"""Runner ``deployment``: shards as child flow runs of a deployment, one per group of shards.

The parent ``annotate`` flow plans as always, cuts the shards into groups of
``options.shards_per_group`` and submits one flow run of ``options.deployment`` (the
``annotate-shard-group`` flow below, deployed on a GPU work pool, say) per group, with an
idempotency key per group: a retried parent finds its groups' runs instead of creating
them again. It waits for every child run, then reads what each shard committed from the
tables themselves (the ``images`` rows this parent run wrote, or the shard's commit): the
output tables, not result storage, say what is done, so parent and children share nothing
but the tables. A failed group is reported (its uncommitted shards are failures; the run is
incomplete and a rerun finishes them), and every other group's rows stay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from typing import Any

from prefect import flow, get_run_logger

from pxflow.tasks.annotate_shard import annotate_shard
from pxflow.tasks.credentials import storage_for
from pxflow.tasks.job import AnnotateJob
from pxflow.tasks.lake import Lake
from pxflow.tasks.plan import PlanStats
from pxflow.tasks.run_plan import plan_shards
from pxflow.tasks.shard_summary import ShardSummary

from .runners import gpu_slot_tags, import_modules, worker_imports

#: seconds between polls of the child runs' states
POLL_S = 2.0


def _group_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    shards = params.get("shards") or []
    job = params.get("job") or {}
    pipeline = (job.get("pipeline") if isinstance(job, dict) else getattr(job, "pipeline", None)) or "pipeline"
    first = shards[0]["index"] if shards else 0
    return f"annotate-{pipeline}-shards-{first}-{first + len(shards) - 1}"


@flow(name="annotate-shard-group", flow_run_name=_group_run_name, validate_parameters=False)
def annotate_shard_group(job: dict[str, Any], shards: list[dict[str, Any]], concurrency: int = 1) -> list[ShardSummary]:
    """Annotate a group of shards of a parent ``annotate`` run (runner ``deployment``): the shard tasks run here.

    ``job`` is the parent's :class:`AnnotateJob` as a dict; each shard is ``{shard_id, index,
    uris, options}``. On a GPU every shard task holds this machine's GPU slot (a tag-based
    global concurrency limit of 1), so one GPU never runs two shards at once.
    """
    from pxflow.pipelines.models.backends import require_device

    import_modules(worker_imports())  # a child run on a pool's worker is a worker too (plug-ins, test hooks)
    annotate_job = job if isinstance(job, AnnotateJob) else AnnotateJob(**job)
    require_device(annotate_job.device, None)  # this machine: a GPU it cannot use fails the group, never a CPU run
    task = annotate_shard.with_options(tags=gpu_slot_tags(annotate_job.device))
    out: list[ShardSummary] = []
    failed: list[str] = []
    for start in range(0, len(shards), max(1, concurrency)):  # at most `concurrency` shards at once
        futures = [task.submit(annotate_job, s["shard_id"], s["index"], list(s["uris"]), s.get("options"))
                   for s in shards[start:start + max(1, concurrency)]]
        for future in futures:
            try:
                out.append(future.result())
            except Exception as exc:  # the group's other shards still run and commit
                failed.append(f"{type(exc).__name__}: {exc}")
    if failed:
        raise RuntimeError(f"{len(failed)} shard(s) of this group failed: {failed}")
    return out


def group_key(run_id: str, shard_ids: list[str]) -> str:
    """Idempotency key of one group: the parent run plus its shards (a retried parent finds the same runs)."""
    digest = hashlib.sha256("\n".join(shard_ids).encode()).hexdigest()[:16]
    return f"pxflow-{run_id}-{digest}"


def check_deployment(name: str) -> None:
    """``name`` (``flow/deployment``) exists on the Prefect API in use, else a one-line ``ValueError``.

    Without it ``run_deployment`` fails only after planning, with ``ObjectNotFound: None``.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ValueError(
                f"runner deployment: no deployment {name!r} on {client.api_url}; create it with `prefect --no-prompt "
                "deploy --prefect-file deployments/prefect.yaml --name gpu` (the annotate-shard-group flow) on the "
                "server in PREFECT_API_URL, or pass --deployment FLOW/NAME"
            ) from None


def fan_out_to_deployment(job: AnnotateJob, input: str, options: Any, everything: bool) -> dict[str, Any]:
    """Plan, submit one child run per group of shards, wait for all, and collect per-shard summaries."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    check_deployment(options.deployment)  # before planning: a missing deployment is one clear line
    storage = storage_for(job.s3_block)
    stats, shards = plan_shards(job, input, storage, options.shard_size, options.limit, everything)
    payload = _jsonable_job(job)
    groups: list[tuple[list[str], Any]] = []
    while True:
        batch = list(itertools.islice(shards, options.shards_per_group))
        if not batch:
            break
        ids = [s.shard_id for s in batch]
        params = {"job": payload, "shards": [{"shard_id": s.shard_id, "index": s.index, "uris": list(s.uris),
                                               "options": list(s.options) if s.options else None} for s in batch],
                  "concurrency": 1}
        child = run_deployment(name=options.deployment, parameters=params, timeout=0,
                               idempotency_key=group_key(job.flow_run_id or "local", ids))
        logger.info("group %d (%d shards) -> flow run %s", len(groups), len(batch), child.name)
        groups.append((ids, child))
    states = _wait(groups)
    return _collect(job, storage, stats, groups, states)


def _jsonable_job(job: AnnotateJob) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dataclasses.asdict(job), default=str))


def _wait(groups: list[tuple[list[str], Any]]) -> dict[Any, Any]:
    """Each child run's final state (polled; children run on their pool's workers)."""
    from prefect.client.orchestration import get_client

    pending = {child.id for _, child in groups}
    states: dict[Any, Any] = {}
    with get_client(sync_client=True) as client:
        while pending:
            for run_id in list(pending):
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    states[run_id] = state
                    pending.discard(run_id)
            if pending:
                time.sleep(POLL_S)
    return states


def _collect(job: AnnotateJob, storage, stats: PlanStats, groups, states) -> dict[str, Any]:
    """Per-shard summaries from the tables: rows this run wrote (computed), a commit from before (skipped)."""
    import pyarrow.compute as pc

    logger = get_run_logger()
    lake = Lake(job.table_root, storage)
    data = lake.dataset("images")
    rows_by_shard: dict[str, list[dict[str, Any]]] = {}
    if data is not None:
        table = data.to_table(columns=["shard_id", "flow_run_id", "status", "error_type", "retryable", "num_objects"],
                              filter=(pc.field("run_key") == job.run_key) & (pc.field("flow_run_id") == job.flow_run_id))
        for row in table.to_pylist():
            rows_by_shard.setdefault(row["shard_id"], []).append(row)
    summaries, failures, index = [], [], 0
    for ids, child in groups:
        state = states[child.id]
        for shard_id in ids:
            rows = rows_by_shard.get(shard_id)
            if rows:
                summaries.append(ShardSummary.of_rows(shard_id, rows, shard_index=index))
            elif lake.shard_committed(job.run_key, shard_id):
                summaries.append(ShardSummary(shard_id, skipped=True, shard_index=index))
            else:
                failures.append({"shard_id": shard_id, "error": f"group run {child.name} ended {state.type.value}: {state.message}"})
            index += 1
        if not state.is_completed():
            logger.error("group run %s ended %s (%s); the other groups' rows stay", child.name, state.type.value, state.message)
    return {"plan": stats.as_dict(), "listed_uris": stats.listed_uris, "summaries": summaries, "failures": failures}
