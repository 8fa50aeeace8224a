"""The ``annotate`` flow: object storage -> deterministic shards -> workers -> Parquet.

1. Resolve the pipeline config, every model's identity and the run key once
   (:func:`pxflow.tasks.job.prepare_job`; nothing is loaded).
2. Stream the input listing (or manifest) and cut it into shards as it arrives;
   each shard becomes one ``annotate-shard`` task run on the chosen task runner
   (:mod:`.runners`), with a bounded number in flight so a million-key listing never
   turns into a million futures.
3. Tasks skip committed shards, so a rerun resumes; ``force`` recomputes.
4. The flow writes the run manifest and a Prefect table artifact (:mod:`.summary`) and
   compares the inputs it listed with the ``images`` rows the shards committed. Any
   shard that still failed after its retries fails the flow, after the manifest records
   it; rerunning picks up exactly the missing shards.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from pxflow.pipelines.io.manifest import iter_entries
from pxflow.tasks.annotate_shard import annotate_shard
from pxflow.tasks.credentials import storage_for
from pxflow.tasks.job import AnnotateJob, prepare_job
from pxflow.tasks.shards import plan_shards

from .options import AnnotateOptions
from .progress import report
from .summary import build_manifest, publish_summary
from .runners import make_task_runner, threads_per_worker


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
        force=options.force,
        download_workers=options.download_workers,
        cpu_threads=threads_per_worker(options.runner, options.concurrency, options.dask_address),
        s3_block=options.s3_block,
        assignments=tuple(options.set),
    )


@flow(name="annotate-shards", validate_parameters=False)
def run_shards(job: AnnotateJob, input: str, shard_size: int, max_in_flight: int) -> dict[str, Any]:
    """Stream shards of ``input`` to ``annotate-shard`` tasks on this flow's task runner."""
    logger = get_run_logger()
    pending: deque = deque()
    shard_of: dict[int, str] = {}
    summaries: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    listed = planned = 0

    def progress(listing_done: bool) -> None:
        report(shards_done=len(summaries) + len(failures), shards_planned=planned,
               images_done=sum(s["n_inputs"] for s in summaries), listed=listed, listing_done=listing_done)

    def collect_one() -> None:
        future = next(as_completed(list(pending)))
        pending.remove(future)
        shard = shard_of.pop(id(future))
        try:
            summary = future.result()
        except Exception as exc:
            failures.append({"shard_id": shard, "error": f"{type(exc).__name__}: {exc}"})
            logger.error("shard %s failed after retries: %s", shard, exc)
        else:
            summaries.append(summary)
            logger.info(
                "shard %s %s: %d images (%d errors), %d objects",
                summary["shard_id"], "skipped (committed)" if summary.get("skipped") else "done",
                summary["n_inputs"], summary["n_error"], summary["n_objects"],
            )
        progress(False)

    for shard in plan_shards_of(input, job, shard_size):
        listed += len(shard)
        planned += 1
        options = list(shard.options) if shard.options else None
        future = annotate_shard.submit(job, shard.shard_id, shard.index, list(shard.uris), options)
        shard_of[id(future)] = shard.shard_id
        pending.append(future)
        while len(pending) >= max_in_flight:
            collect_one()
    progress(True)
    while pending:
        collect_one()
    summaries.sort(key=lambda s: s.get("shard_index", 0))
    return {"listed": listed, "planned": planned, "summaries": summaries, "failures": failures}


def plan_shards_of(input: str, job: AnnotateJob, shard_size: int):
    """The shards of ``input`` (prefix, image or manifest) as listed through the job's storage."""
    return plan_shards(iter_entries(input, storage_for(job.s3_block)), shard_size)


class IncompleteRunError(RuntimeError):
    """Some inputs have no row yet (a shard failed after its retries); rerun to finish."""


@flow(name="annotate", log_prints=True)
def annotate(
    input: str, output: str, options: AnnotateOptions | None = None, partition: str | None = None
) -> dict[str, Any]:
    """Annotate every image under ``input`` (prefix or manifest) into Parquet under ``output``."""
    from prefect.runtime import flow_run

    options = options or AnnotateOptions()
    logger = get_run_logger()
    started = time.perf_counter()
    job = job_for(output, options, partition)
    logger.info("run key %s (%s, model %s sha256 %s…)", job.run_key, job.pipeline, job.model_name, job.model_sha256[:12])
    task_runner = make_task_runner(options.runner, options.concurrency, options.dask_address)
    outcome = run_shards.with_options(task_runner=task_runner)(job, input, options.shard_size, max(2, 2 * options.concurrency))
    manifest = build_manifest(job, input, options.shard_size, outcome, time.perf_counter() - started, flow_run.get_id())
    manifest["manifest_uri"] = job.layout.manifest_uri()
    storage_for(job.s3_block).write_bytes(manifest["manifest_uri"], json.dumps(manifest, indent=1, default=str).encode())
    publish_summary(manifest)
    logger.info(
        "listed %d inputs, %d images rows (%d ok, %d error), %d objects; %d/%d shards committed (%d skipped)",
        manifest["listed_inputs"], manifest["rows_images"], manifest["status_counts"]["ok"],
        manifest["status_counts"]["error"], manifest["rows_objects"], manifest["shards_committed"],
        manifest["shards_planned"], manifest["shards_skipped"],
    )
    if not manifest["complete"]:
        raise IncompleteRunError(
            f"{manifest['listed_inputs'] - manifest['rows_images']} input(s) without a row; "
            f"failed shards: {[f['shard_id'] for f in manifest['failed_shards']]} (rerun to resume)"
        )
    return manifest
