"""The ``annotate`` run: object storage -> incremental plan -> shards on workers -> Delta tables.

1. Resolve the pipeline config, every model's identity and the run key once
   (:func:`pxflow.tasks.job.prepare_job`; nothing is loaded), check that the partitioning
   fits the output tables and open the models before any work: :func:`make_plan`, one
   :class:`~pxflow.tasks.run_plan.RunPlan`. The CLI computes it in its preflight and passes
   it as the ``plan`` parameter; the flow recomputes only a plan made for other options.
2. Plan incrementally (:func:`pxflow.tasks.run_plan.plan_shards`): stream the listing (or manifest), keep
   the inputs with no row for this run key, with changed content, or with a retryable
   failure; cut them into shards as they arrive, each one ``annotate-shard`` task run on
   the chosen task runner (:mod:`.runners`), a bounded number in flight.
3. Each shard commits its rows exactly once (:mod:`pxflow.tasks.lake`). ``replace``
   stages the whole partition and swaps it in with one commit per table; ``prune`` drops
   rows whose input is no longer listed. A replace killed between its two table swaps is
   finished by the next run of its run key and partition, before it plans
   (:mod:`pxflow.tasks.maintenance`).
4. The run appends its row to the ``runs`` table and publishes a Prefect artifact naming
   the table versions it produced. A run with failed shards or retryable failures is not
   complete: it fails, and the next run picks up exactly what is missing. A complete run whose
   inferred inputs all failed (or more than ``options.max_error_rate`` of them) fails too, with
   its summary as the state's data; so does a run stopped by :mod:`.interrupt` (``interrupted``).

This module is the run's body, without Prefect: :mod:`pxflow.flows.annotate` makes the ``annotate`` flow
of :func:`annotate_run`. The CLI runs the body inline (no Prefect server, :mod:`.inline`) when no server
is configured, ``--prefect`` is not given and the runner's shards run in this process (``thread``): the
shards then run as :func:`~pxflow.tasks.annotate_shard.annotate_shard_inline` (the task's retries) on a
thread pool of ``concurrency``, and Prefect is never imported; what exists only in a flow run
(artifacts, GPU slot limits) is skipped, the tables, summary and report are the same.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from dataclasses import replace as replace_fields
from typing import TYPE_CHECKING, Any

from pxflow.tasks.annotate_shard import annotate_shard_inline
from pxflow.tasks.credentials import storage_for
from pxflow.pipelines.hooks import checkpoint
from pxflow.tasks.job import AnnotateJob, lease_index, prepare_job
from pxflow.tasks.lake import Lake
from pxflow.tasks.maintenance import finish_pending_swaps, prune_missing, staging_for, swap_in_staging
from pxflow.tasks.model_cache import checked_pipeline
from pxflow.tasks.run_plan import RunPlan, plan_basis, plan_shards
from pxflow.tasks.shard_summary import ShardSummary

from .inline import failed_state, flow_run_id, in_flow_run, next_done, run_logger, submitter
from .interrupt import stop_requested
from .options import AnnotateOptions
from .progress import report
from .runners import get_runner
from .report import publish_report
from .summary import publish_summary, run_summary

if TYPE_CHECKING:  # the index versions module loads faiss: imported when a run holds an index
    from pxflow.pipelines.retrieval.versions import PinLease


class EmptyInputError(ValueError):
    """The input lists nothing (a typo, a wrong scheme): not a successful run."""


class IncompleteRunError(RuntimeError):
    """Some inputs have no row yet or only a retryable failure; rerun to finish."""


def job_for(output: str, options: AnnotateOptions, partition: str | None = None) -> AnnotateJob:
    """The run's :class:`AnnotateJob` from the flow options."""
    return prepare_job(
        output,
        pipeline=options.pipeline,
        model_dir=options.model_dir,
        threshold=options.threshold,
        backend=options.backend,
        predict_kwargs=options.predict_kwargs,
        partition=partition,
        download_workers=options.download_workers,
        cpu_threads=get_runner(options.runner).threads_per_worker(options.concurrency, _address(options)),
        s3_block=options.s3_block,
        assignments=tuple(options.set),
        device=options.device,
    )


def _address(options: AnnotateOptions) -> str | None:
    return get_runner(options.runner).address(options)


#: the options a :class:`RunPlan` depends on (what :func:`job_for` and the checks read)
PLAN_FIELDS = frozenset({"pipeline", "model_dir", "threshold", "backend", "predict_kwargs", "set", "concurrency",
                         "runner", "dask_address", "ray_address", "device", "download_workers", "s3_block"})


def make_plan(output: str, options: AnnotateOptions, partition: str | None = None, check_tables: bool = True,
              check_models: bool = True) -> RunPlan:
    """The run's :class:`RunPlan`: the job prepared once, the tables' partitioning and the models checked.

    ``check_tables=False`` where the tables cannot be read yet (a ``--s3-block`` before the API is up),
    ``check_models=False`` where cheaper checks come first (the CLI): the caller (or the flow) checks them.
    Raises ``ValueError``/``TypeError`` for a bad option, model or partition.
    """
    job = job_for(output, options, partition)
    if check_tables:
        Lake(output, storage_for(job.s3_block)).check_partitioning(partition)
    if check_models:
        check_plan_models(job, options)
    return RunPlan(job=job, basis=basis_of(output, options), tables_checked=check_tables, models_checked=check_models)


def check_plan_models(job: AnnotateJob, options: AnnotateOptions) -> None:
    """Open the job's models and validate its predict options: bad ones fail here, once, before any shard.

    When the runner's shards run in this process (``thread``), the loaded pipeline stays cached for them.
    """
    runner = get_runner(options.runner)  # deployment: the models run on its pool; they are validated on this CPU
    checked_pipeline(job.on_device(runner.validation_device(job.device)).config, job.model_sha256, job.predict_kwargs,
                     keep=runner.in_process)


def basis_of(output: str, options: AnnotateOptions) -> str:
    """What a plan for ``output`` and ``options`` must have been computed from."""
    return plan_basis(output, options.model_dump(mode="json", include=set(PLAN_FIELDS)))


def stream_shards(
    job: AnnotateJob, input: str, shard_size: int, max_in_flight: int, everything: bool, limit: int | None = None,
    runner: str = "thread", workers: int = 1, task_runner: Any = None,
) -> dict[str, Any]:
    """Plan ``input`` against the tables and stream its shards to ``annotate-shard`` task runs on ``task_runner``
    (an entered Prefect ``TaskRunner``: the runner's threads, Dask or Ray cluster) in a flow run; inline, to
    :func:`annotate_shard_inline` on ``workers`` threads."""
    logger = run_logger()
    storage = storage_for(job.s3_block)
    stats, shards = plan_shards(job, input, storage, shard_size, limit, everything)
    pending: deque = deque()
    shard_of: dict[int, str] = {}
    summaries: list[ShardSummary] = []
    failures: list[dict[str, Any]] = []

    def progress(listing_done: bool) -> None:
        report(shards_done=len(summaries) + len(failures), shards_planned=stats.shards,
               images_done=sum(s.n_inputs for s in summaries), listed=stats.todo, listing_done=listing_done)

    def collect_one() -> None:
        future = next_done(pending)
        pending.remove(future)
        shard = shard_of.pop(id(future))
        try:
            summary = future.result()
        except Exception as exc:
            failures.append({"shard_id": shard, "error": f"{type(exc).__name__}: {exc}"})
            logger.error("shard %s failed after retries: %s", shard, exc)
        else:
            summaries.append(summary)
            logger.info("shard %s %s: %d images (%d errors), %d objects", summary.shard_id,
                        "skipped (committed)" if summary.skipped else "done",
                        summary.n_inputs, summary.n_error, summary.n_objects)
        progress(False)

    # in a flow run on a GPU of this machine, a tag-based global concurrency limit keeps one shard per GPU
    # at a time (such limits exist only on a Prefect server); inline there is no task, only its function
    shard_task = None
    if task_runner is not None:
        from . import annotate as flows

        shard_task = flows.annotate_shard.with_options(tags=get_runner(runner).shard_tags(job.device))
    first = True
    planned_all = False
    with submitter(shard_task, workers, annotate_shard_inline, task_runner) as submit:
        while not stop_requested():  # SIGTERM: plan no more shards; those in flight still commit below
            shard = next(shards, None)
            if shard is None:
                planned_all = True
                break
            if first:
                checkpoint("after_plan")
                first = False
            options = list(shard.options) if shard.options else None
            with get_runner(runner).submit_context(job.device):  # dask/ray: the shard asks for one GPU
                future = submit(job, shard.shard_id, shard.index, list(shard.uris), options)
            shard_of[id(future)] = shard.shard_id
            pending.append(future)
            while len(pending) >= max_in_flight:
                collect_one()
        if not planned_all:
            logger.warning("stop requested: no new shards after %d planned; waiting for %d in flight", stats.shards,
                           len(pending))
        progress(True)
        while pending:
            collect_one()
    if stats.duplicates:
        logger.warning("%d input(s) were listed more than once and annotated once", stats.duplicates)
    summaries.sort(key=lambda s: s.shard_index)
    return {"plan": stats.as_dict(), "listed_uris": stats.listed_uris, "summaries": summaries, "failures": failures,
            "interrupted": not planned_all}


def annotate_run(
    input: str, output: str, options: AnnotateOptions | None = None, partition: str | None = None,
    plan: RunPlan | None = None,
) -> dict[str, Any]:
    """Annotate every image under ``input`` (prefix or manifest) into the Delta tables under ``output``.

    ``plan``: the :class:`~pxflow.tasks.run_plan.RunPlan` already computed for these options and output
    (the CLI's preflight): used as is, so the job is prepared and the models checked once per run. A plan
    made for other options, another output or another partition is ignored and the flow computes its own.
    """
    options = options or AnnotateOptions()
    started = time.time()
    get_runner(options.runner).check_device(options.device, options.backend, _address(options))
    plan, lease = _leased_plan(output, options, partition, plan)
    with lease or contextlib.nullcontext():  # gc keeps the run's index version until the run ends
        return _annotate(plan, input, output, options, partition, started)


def _leased_plan(output: str, options: AnnotateOptions, partition: str | None,
                 given: RunPlan | None = None) -> tuple[RunPlan, PinLease | None]:
    """The run's plan (``given`` when it was made for these options) and a pin lease on the index version
    its job pinned. If gc collected that version between the pin and the lease (CURRENT moved on
    meanwhile), the plan is computed again."""
    plan = given if given is not None and given.basis == basis_of(output, options) and given.job.partition == partition else None
    for attempt in range(3):  # the job only: _annotate checks what the plan has not
        plan = plan or make_plan(output, options, partition, check_tables=False, check_models=False)
        if plan.job.index_spec is None:  # no versioned index to hold (and its module, which loads faiss, stays out)
            return plan, None
        from pxflow.pipelines.retrieval.versions import VersionCollected

        try:
            return plan, lease_index(plan.job, holder=f"annotate {flow_run_id() or uuid.uuid4().hex}")
        except VersionCollected:
            plan = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _annotate(plan: RunPlan, input: str, output: str, options: AnnotateOptions, partition: str | None,
              started: float) -> dict[str, Any]:
    logger = run_logger()
    job = plan.job
    storage = plan.storage
    lake = Lake(output, storage)
    if not plan.tables_checked:
        lake.check_partitioning(partition)
    if not plan.models_checked:
        check_plan_models(job, options)
    # a --replace killed between its two table swaps: finish it before planning against its half
    finish_pending_swaps(lake, job.run_key, partition)
    run_id = flow_run_id() or uuid.uuid4().hex
    everything = options.force or options.replace
    job = replace_fields(job, flow_run_id=run_id, force=everything,
                         staging=staging_for(output, run_id) if options.replace else None)
    logger.info("run key %s (%s, model %s sha256 %s…)", job.run_key, job.pipeline, job.model_name, job.model_sha256[:12])
    runner = get_runner(options.runner)
    job = job.on_device(runner.worker_device(job.device, _address(options)))
    if not runner.runs_tasks:
        outcome = runner.fan_out(job, input, options, everything)
    else:
        shards = (job, input, options.shard_size, max(2, 2 * options.concurrency), everything, options.limit,
                  options.runner)
        if in_flow_run():
            # the runner's task runner (threads, a Dask or Ray cluster), entered in this flow run for its shard
            # task runs: no subflow just to carry it (a flow run costs ~0.5-1 s of API calls)
            with runner.task_runner(options.concurrency, _address(options), options.device) as task_runner:
                outcome = stream_shards(*shards, task_runner=task_runner)
        else:  # inline (the CLI without a server): the shards on a thread pool here, no task runs
            outcome = stream_shards(*shards, workers=options.concurrency)
    if outcome["plan"]["listed"] == 0 and not options.allow_empty and not outcome.get("interrupted"):
        raise EmptyInputError(f"{input} lists no images (a typo? pass allow_empty to accept an empty run)")
    pruned = 0
    # an interrupted run listed only part of the input: swapping its staging in or pruning against its
    # listing would drop the rows of every input it never reached
    interrupted = bool(outcome.get("interrupted"))
    if options.replace and not outcome["failures"] and not interrupted:
        swap_in_staging(lake, Lake(job.staging, storage), job.run_key, partition)
    if options.prune and not interrupted:
        pruned = prune_missing(lake, job.run_key, partition, outcome["listed_uris"])
    checkpoint("before_runs_row")
    summary = run_summary(job, input, options, outcome, lake, started, run_id, pruned)
    publish_summary(summary)
    publish_report(lake, run_id, logger)  # best effort: a warning, never a failed run
    logger.info(
        "listed %d inputs (%d unchanged, %d new, %d changed, %d retried), %d inferred (%d errors), %d objects; "
        "%d/%d shards committed",
        summary.listed, summary.unchanged, summary.new, summary.changed, summary.retried,
        summary.images_inferred, summary.images_error, summary.objects_written,
        summary.shards_committed, summary.shards_planned,
    )
    if summary.interrupted:  # what committed stays; the summary (with its counts) is the state's data
        return failed_state("interrupted: stopped planning new shards; rerun to finish", data=summary.as_dict())
    if not summary.complete:
        # the first failed shard's error says why (a model that cannot run fails every shard the same way)
        why = f"; first shard error: {outcome['failures'][0]['error']}" if outcome["failures"] else ""
        raise IncompleteRunError(
            f"{len(summary.missing)} input(s) without a row, {summary.images_retryable} retryable failure(s), "
            f"failed shards: {[f['shard_id'] for f in outcome['failures']]} (rerun to finish){why}"
        )
    if summary.error_budget_exceeded:  # complete, but too many inputs failed: a failed run, with its summary
        return failed_state(f"error budget exceeded: {summary.images_error} of {summary.images_inferred} "
                            f"inferred inputs failed (max_error_rate {options.max_error_rate}): "
                            f"{summary.error_types}", data=summary.as_dict())
    return summary.as_dict()
