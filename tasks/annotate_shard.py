"""Annotate one shard: infer its inputs, then commit their rows to the Delta tables exactly once.

The work itself is :func:`run_shard` (plain Python, testable without Prefect);
:data:`annotate_shard` wraps it as a Prefect task that owns retries (made on first use), and
:func:`annotate_shard_inline` retries it the same way without Prefect (a flow body run inline). The output tables,
not Prefect's database, say what is done: a shard is done when the ``images`` table holds
its application transaction (:mod:`.lake`). A shard's commit replaces its inputs' rows
for this run key in ``objects`` then ``images``, so a crash, a killed worker or a
concurrent duplicate never leaves a partial shard visible as done, and never duplicates a row.

Downloads, decoding and preprocessing run ahead of the model in the pipeline's own
``predict()`` loop (its loader threads); each ``InputItem`` records what its download saw
(etag, size, timings) for the ``images`` rows. A PDF input becomes its pages here, when it
is read: one ``images`` row per page, all replaced together by the shard's commit.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

from pxflow.pipelines.io.inputs import InputEntry, InputItem, iter_inputs
from pxflow.pipelines.io.uri import input_identity

from .credentials import storage_for
from pxflow.pipelines.hooks import checkpoint
from .job import AnnotateJob
from .lake import Lake
from .model_cache import get_pipeline, process_stats
from .rows import RowBuilder, systematic_failure
from .shard_summary import ShardSummary

SHARD_RETRIES = 2
#: seconds before each retry of a shard (Prefect's ``retry_delay_seconds``; inline too)
RETRY_DELAYS_S = (2, 10)


class TransientShardError(RuntimeError):
    """Some downloads failed in a way that may pass on a retry (throttling, 5xx, dropped connections)."""


class ModelFailedError(RuntimeError):
    """The model failed on every input of the shard the same way: a model error, not bad images.

    The shard commits nothing and is not retried (the same model fails the same way), so the
    run fails and says why instead of writing an error row per image and calling itself complete.
    """


def run_shard(
    job: AnnotateJob,
    shard_id: str,
    uris: Sequence[str],
    final_attempt: bool = True,
    options: Sequence[dict[str, Any] | None] | None = None,
) -> ShardSummary:
    """Annotate ``uris`` and commit their rows; returns the shard's summary.

    ``options`` (one per URI, or None) are per-input predict options from the listing,
    such as a manifest's SAM ``prompt`` column. On a non-final attempt a transient
    download failure raises :class:`TransientShardError` (Prefect retries the shard); on
    the final one it is committed as a ``retryable`` error row, which the next run retries.
    When every input failed in the model the same way, :class:`ModelFailedError` is raised
    and nothing is committed.
    """
    storage = storage_for(job.s3_block)
    lake = Lake(job.table_root, storage)
    if not job.force and lake.shard_committed(job.run_key, shard_id):
        return ShardSummary(shard_id, skipped=True)

    started, started_at = time.perf_counter(), time.time()
    pipeline = get_pipeline(job.config, job.model_sha256)
    per_input = options or [None] * len(uris)
    items: list[InputItem] = []  # filled as predict() pulls them: a PDF is read in turn, not all up front

    def expand() -> Iterator[InputItem]:
        for uri, opts in zip(uris, per_input, strict=True):
            for item in _items(uri, storage, opts):
                items.append(item)
                yield item

    builder = RowBuilder(job.run_key, job.pipeline, job.model_name, job.model_sha256, shard_id, job.flow_run_id,
                         result_class=pipeline.result_class)
    results = pipeline.predict(expand(), storage=storage, **job.predict_kwargs)
    for index, result in enumerate(results):  # predict() yields in input order, one result per item
        builder.add(items[index].uri, result, items[index].meta)
    if len(builder.images) != len(items):
        raise RuntimeError(f"shard {shard_id}: {len(items)} inputs gave {len(builder.images)} results")
    failure = systematic_failure(builder.images)
    if failure is not None:
        raise ModelFailedError(
            f"shard {shard_id}: the model ({job.model_name}) failed on all {len(items)} inputs with the same error, "
            f"so nothing was written: {failure}"
        )
    if not final_attempt and any(item.meta.get("transient") for item in items):
        failed = sum(1 for item in items if item.meta.get("transient"))
        raise TransientShardError(f"shard {shard_id}: {failed} download(s) failed transiently; retrying the shard")
    checkpoint("after_infer")

    objects, images = builder.tables()
    # keyed by the shard's inputs (a PDF's identity once, covering all its pages, a page count that shrank included)
    versions = lake.commit_shard(job.run_key, shard_id, job.partition, [input_identity(u) for u in uris], objects, images)
    checkpoint("after_images_commit")
    # the wall-clock window of that work: a timeline of the run, and the idle gaps between one worker's shards
    return ShardSummary.of_rows(shard_id, builder.images, versions=versions,
                                seconds=round(time.perf_counter() - started, 3), started_at=started_at,
                                finished_at=time.time(), **process_stats())


def _items(uri: str, storage, options: dict[str, Any] | None) -> Iterator[InputItem]:
    """The input under its identity (planning already gave one; a direct caller may not have): the name its
    rows hold, and readable as is, a file name that is not valid UTF-8 included. A PDF is one input of the
    plan but one item per page (its page count is known only once it is read), so one row per page, all
    under the PDF's identity with ``page_index`` set; an unreadable PDF is one error item."""
    return iter_inputs(InputEntry(input_identity(uri), None, options or {}), storage)


#: object-store answers that will not change on a retry (bad credentials, no permission, no bucket)
PERMANENT_MARKERS = ("403", "Forbidden", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket")


def retryable(exc: BaseException) -> bool:
    """Whether a shard that raised ``exc`` may pass on a retry (downloads, commit conflicts, connections),
    never a usage error: the retry rule of the Prefect task and of :func:`annotate_shard_inline` alike."""
    if isinstance(exc, TransientShardError):
        return True
    if isinstance(exc, (ModelFailedError, ValueError, TypeError, PermissionError, KeyError)):
        return False  # the same model fails the same way; bad options, credentials, data: the same every time
    if not isinstance(exc, Exception):
        return False
    from deltalake.exceptions import CommitFailedError

    if any(marker in str(exc) for marker in PERMANENT_MARKERS):
        return False
    return isinstance(exc, (CommitFailedError, OSError, ConnectionError, TimeoutError)) or "conflict" in str(exc).lower()


def _retry_only_transient(task, task_run, state) -> bool:
    """The task's ``retry_condition_fn``: :func:`retryable` of the exception the attempt raised."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classified, not handled
        return retryable(exc)
    return False


def _annotate_shard(
    job: AnnotateJob, shard_id: str, shard_index: int, uris: list[str], options: list[dict[str, Any] | None] | None = None
) -> ShardSummary:
    from prefect.runtime import task_run

    final = (task_run.run_count or 1) > SHARD_RETRIES
    return run_shard(job, shard_id, uris, final_attempt=final, options=options).at(shard_index)


def annotate_shard_inline(
    job: AnnotateJob, shard_id: str, shard_index: int, uris: list[str], options: list[dict[str, Any] | None] | None = None
) -> ShardSummary:
    """The ``annotate-shard`` task without Prefect (a flow body run inline, :mod:`pxflow.flows.inline`):
    the same attempts, delays and retry rule as the task's options, so a transient failure is retried
    and its last attempt commits ``retryable`` rows, exactly as in a flow run."""
    for attempt in range(SHARD_RETRIES + 1):
        try:
            return run_shard(job, shard_id, uris, final_attempt=attempt == SHARD_RETRIES, options=options).at(shard_index)
        except Exception as exc:
            if attempt == SHARD_RETRIES or not retryable(exc):
                raise
            time.sleep(RETRY_DELAYS_S[attempt])
    raise AssertionError("unreachable")


def _make_task():
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    # NO_CACHE: the tables' transaction log is the cache (it survives Prefect's database and works across flows).
    return task(
        _annotate_shard,
        name="annotate-shard",
        task_run_name="shard-{shard_index}-{shard_id}",
        retries=SHARD_RETRIES,
        retry_delay_seconds=list(RETRY_DELAYS_S),
        retry_condition_fn=_retry_only_transient,
        cache_policy=NO_CACHE,
        persist_result=False,
    )


def __getattr__(name: str) -> Any:
    """``annotate_shard``, the Prefect task, made on first use: a run without Prefect (inline) imports this
    module for :func:`run_shard` and :func:`annotate_shard_inline` and never pays Prefect's ~1 s import."""
    if name == "annotate_shard":
        globals()[name] = task = _make_task()  # later lookups find it without this hook
        return task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
