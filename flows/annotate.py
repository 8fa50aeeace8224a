"""The ``annotate`` flow: object storage -> deterministic shards -> workers -> Parquet.

1. Resolve the pipeline config, the model checksum and the run key once.
2. Stream the input listing (or manifest) and cut it into shards as it arrives;
   each shard becomes one ``annotate-shard`` task run on the chosen task runner
   (threads in this process, or Dask worker processes), with a bounded number
   in flight so a million-key listing never turns into a million futures.
3. Tasks skip committed shards, so a rerun resumes; ``force`` recomputes.
4. The flow writes the run manifest (JSON) and a Prefect table artifact, and
   compares the inputs it listed with the ``images`` rows the shards committed.
   Any shard that still failed after its retries fails the flow, after the
   manifest records it; rerunning picks up exactly the missing shards.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed

from pxflow.pipelines.config import load_config
from pxflow.pipelines.io import storage
from pxflow.pipelines.io.manifest import iter_input_uris
from pxflow.pipelines.models.backends import default_threads
from pxflow.tasks.annotate_shard import AnnotateJob, annotate_shard
from pxflow.tasks.model_cache import model_identity
from pxflow.tasks.shards import DEFAULT_SHARD_SIZE, plan_shards, run_key

RUNNERS = ("thread", "dask")
#: loader threads per shard: downloads are latency-bound, so more than the cores
DEFAULT_DOWNLOAD_WORKERS = 8

ProgressCallback = Callable[[dict[str, Any]], None]
_progress: ProgressCallback | None = None


def set_progress_callback(callback: ProgressCallback | None) -> None:
    """Receive ``{"shards_done", "shards_planned", "images_done", "listed", "listing_done"}`` updates
    (in-process only; the CLI draws its progress bar from them)."""
    global _progress
    _progress = callback


def _report(**state: Any) -> None:
    if _progress is not None:
        _progress(state)


def resolve_s3_block(name: str | None) -> dict[str, Any] | None:
    """S3 settings kept in a Prefect ``Secret`` block holding a JSON object
    (``endpoint_url``, ``region``, ``access_key_id``, ``secret_access_key``, ``session_token``)."""
    if not name:
        return None
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of S3 settings")
    return value


def prepare_job(
    output: str,
    pipeline: str = "object_detection",
    model_dir: str | None = None,
    threshold: Any = None,
    backend: str | None = None,
    predict_kwargs: dict[str, Any] | None = None,
    partition: str | None = None,
    force: bool = False,
    download_workers: int = DEFAULT_DOWNLOAD_WORKERS,
    cpu_threads: int | None = None,
    s3: dict[str, Any] | None = None,
) -> AnnotateJob:
    """Config (YAML < parameters), model identity and run key: everything shards share."""
    from pxflow.flows.cli.predict import _override_first_submodule

    config = load_config(pipeline)
    if model_dir:
        _override_first_submodule(config, "model_dir", model_dir)
    px = config["Pxflow"]
    if backend:
        px["backend"] = backend
    px["load_workers"] = max(1, int(download_workers))
    px["prefetch"] = max(int(px.get("prefetch") or 8), 2 * px["load_workers"])
    if cpu_threads:
        px["cpu_threads"] = int(cpu_threads)
    kwargs = dict(predict_kwargs or {})
    if threshold is not None:
        kwargs["threshold"] = threshold
    model_name, model_sha = model_identity(config)
    key = run_key(config, model_sha, kwargs)
    return AnnotateJob(
        config=config,
        predict_kwargs=kwargs,
        run_key=key,
        pipeline=str(config["pipeline_name"]),
        model_name=model_name,
        model_sha256=model_sha,
        output=output,
        partition=partition,
        force=force,
        s3=s3,
    )


def make_task_runner(runner: str, concurrency: int, dask_address: str | None = None):
    """Threads in this process (default) or a Dask cluster (a LocalCluster of worker processes)."""
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, concurrency))
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": max(1, concurrency),
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            },
        )
    raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")


@flow(name="annotate-shards", validate_parameters=False)
def run_shards(job: AnnotateJob, input: str, shard_size: int, max_in_flight: int) -> dict[str, Any]:
    """Stream shards of ``input`` to ``annotate-shard`` tasks on this flow's task runner."""
    logger = get_run_logger()
    pending: deque = deque()
    shard_of: dict[int, str] = {}
    summaries: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    listed = planned = 0

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
        _report(
            shards_done=len(summaries) + len(failures), shards_planned=planned,
            images_done=sum(s["n_inputs"] for s in summaries), listed=listed, listing_done=False,
        )

    for shard in plan_shards(iter_input_uris(input), shard_size):
        listed += len(shard)
        planned += 1
        future = annotate_shard.submit(job, shard.shard_id, shard.index, list(shard.uris))
        shard_of[id(future)] = shard.shard_id
        pending.append(future)
        while len(pending) >= max_in_flight:
            collect_one()
    _report(shards_done=len(summaries) + len(failures), shards_planned=planned,
            images_done=sum(s["n_inputs"] for s in summaries), listed=listed, listing_done=True)
    while pending:
        collect_one()
    summaries.sort(key=lambda s: s.get("shard_index", 0))
    return {"listed": listed, "planned": planned, "summaries": summaries, "failures": failures}


def build_manifest(job: AnnotateJob, input: str, shard_size: int, outcome: dict[str, Any], seconds: float,
                   flow_run_id: str | None) -> dict[str, Any]:
    """The run manifest: what was asked, what was written, and whether every input has its row."""
    summaries = outcome["summaries"]
    error_types: dict[str, int] = {}
    for s in summaries:
        for name, count in s["error_types"].items():
            error_types[name] = error_types.get(name, 0) + count
    computed = [s for s in summaries if not s.get("skipped")]
    rows_images = sum(s["n_inputs"] for s in summaries)
    computed_images = sum(s["n_inputs"] for s in computed)
    layout = job.layout
    return {
        "run_id": job.run_key,
        "run_key": job.run_key,
        "flow_run_id": flow_run_id,
        "pipeline": job.pipeline,
        "model_name": job.model_name,
        "model_sha256": job.model_sha256,
        "predict_kwargs": job.predict_kwargs,
        "config": job.config,
        "input": input,
        "output": job.output,
        "partition": job.partition,
        "shard_size": shard_size,
        "listed_inputs": outcome["listed"],
        "rows_images": rows_images,
        "rows_objects": sum(s["n_objects"] for s in summaries),
        "status_counts": {"ok": sum(s["n_ok"] for s in summaries), "error": sum(s["n_error"] for s in summaries)},
        "error_types": error_types,
        "shards_planned": outcome["planned"],
        "shards_committed": len(summaries),
        "shards_skipped": len(summaries) - len(computed),
        "failed_shards": outcome["failures"],
        "seconds": round(seconds, 3),
        "images_computed": computed_images,
        "images_per_second": round(computed_images / seconds, 3) if seconds > 0 else None,
        "worker_pids": sorted({s["pid"] for s in computed if "pid" in s}),
        "tables": {"objects": layout.table_dir("objects"), "images": layout.table_dir("images")},
        "complete": not outcome["failures"] and rows_images == outcome["listed"],
    }


def publish_summary(manifest: dict[str, Any]) -> None:
    """A Prefect table artifact with the counts, speed, errors and links to the outputs."""
    table = [
        {"metric": "listed inputs", "value": manifest["listed_inputs"]},
        {"metric": "images rows", "value": manifest["rows_images"]},
        {"metric": "status ok", "value": manifest["status_counts"]["ok"]},
        {"metric": "status error", "value": manifest["status_counts"]["error"]},
        *({"metric": f"error: {k}", "value": v} for k, v in sorted(manifest["error_types"].items())),
        {"metric": "objects rows", "value": manifest["rows_objects"]},
        {"metric": "shards committed / planned", "value": f"{manifest['shards_committed']} / {manifest['shards_planned']}"},
        {"metric": "shards skipped (already done)", "value": manifest["shards_skipped"]},
        {"metric": "failed shards", "value": len(manifest["failed_shards"])},
        {"metric": "images/s (computed shards)", "value": manifest["images_per_second"]},
        {"metric": "objects table", "value": manifest["tables"]["objects"]},
        {"metric": "images table", "value": manifest["tables"]["images"]},
        {"metric": "run manifest", "value": manifest["manifest_uri"]},
    ]
    verdict = "complete: every listed input has its row" if manifest["complete"] else "INCOMPLETE"
    create_table_artifact(
        table=table,
        key=f"annotate-{manifest['run_key']}",
        description=(
            f"**annotate** `{manifest['pipeline']}` / `{manifest['model_name']}` run `{manifest['run_key']}`"
            f"{' partition `' + manifest['partition'] + '`' if manifest['partition'] else ''}: {verdict}.\n\n"
            f"Outputs: [objects]({manifest['tables']['objects']}), [images]({manifest['tables']['images']}), "
            f"[manifest]({manifest['manifest_uri']})"
        ),
    )


class IncompleteRunError(RuntimeError):
    """Some inputs have no row yet (a shard failed after its retries); rerun to finish."""


@flow(name="annotate", log_prints=True)
def annotate(
    input: str,
    output: str,
    pipeline: str = "object_detection",
    shard_size: int = DEFAULT_SHARD_SIZE,
    concurrency: int = 2,
    runner: str = "thread",
    force: bool = False,
    model_dir: str | None = None,
    threshold: float | dict | None = None,
    backend: str | None = None,
    predict_kwargs: dict | None = None,
    partition: str | None = None,
    download_workers: int = DEFAULT_DOWNLOAD_WORKERS,
    dask_address: str | None = None,
    s3_block: str | None = None,
) -> dict[str, Any]:
    """Annotate every image under ``input`` (prefix or manifest) into Parquet under ``output``."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    started = time.perf_counter()
    s3 = resolve_s3_block(s3_block)
    if s3:
        storage.configure_s3(s3)
    cpu_threads = None
    if runner == "dask" and not dask_address:  # worker processes share the cores instead of each taking all
        cpu_threads = max(1, default_threads() // max(1, concurrency))
    job = prepare_job(
        output, pipeline, model_dir, threshold, backend, predict_kwargs, partition, force,
        download_workers, cpu_threads, s3,
    )
    logger.info("run key %s (%s, model %s sha256 %s…)", job.run_key, job.pipeline, job.model_name, job.model_sha256[:12])
    shards_flow = run_shards.with_options(task_runner=make_task_runner(runner, concurrency, dask_address))
    outcome = shards_flow(job, input, shard_size, max(2, 2 * concurrency))
    manifest = build_manifest(job, input, shard_size, outcome, time.perf_counter() - started, flow_run.get_id())
    manifest["manifest_uri"] = job.layout.manifest_uri()
    storage.write_bytes(manifest["manifest_uri"], json.dumps(manifest, indent=1, default=str).encode())
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
