"""One flow body, two ways to run it: as a Prefect flow run, or inline as plain Python (``flow.fn``).

Maintenance and evaluation (lake optimize/vacuum, eval, export, the index flows) take seconds of
work; a Prefect server to record them costs 20-30 s more when none is running. The ``pxflow`` CLI
therefore calls ``flow.fn(...)`` when no server is configured (:mod:`pxflow.flows.cli.server`), and
deployments run the very same body as a flow. The body stays one function because every
Prefect-only step in it goes through the helpers below, which do the Prefect thing inside a flow
run and the plain thing outside one:

- :func:`run_logger`: the run's logger, else the ``pxflow`` logger (warnings reach stderr);
- :func:`call_task` / :func:`map_task`: a task (``.submit`` for many) or its function ``.fn``
  (many in a thread pool, like the thread task runner);
- :func:`submitter` / :func:`next_done`: a stream of task submissions (the annotate shards), to the
  flow's task runner or to a thread pool;
- :func:`flow_state`: a (sub)flow's final state, or its body's outcome as one;
- :func:`in_flow_run`: for what only exists in a run (artifacts, concurrency limits).
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence


def in_flow_run() -> bool:
    """True inside a Prefect flow run (a Prefect API records it), False when a body runs inline."""
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """``get_run_logger()`` in a flow run; else the standard ``pxflow`` logger (no API to send logs to)."""
    if in_flow_run():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger("pxflow")


def call_task(task: Any, *args: Any, **kwargs: Any) -> Any:
    """``task(...)`` in a flow run (a recorded task run); its plain function outside one."""
    return task(*args, **kwargs) if in_flow_run() else task.fn(*args, **kwargs)


def map_task(task: Any, calls: Sequence[tuple], concurrency: int = 1) -> list[Any]:
    """The results of ``task(*args)`` for each ``args`` in ``calls``, in order.

    In a flow run every call is submitted to the flow's task runner; inline they run in a pool of
    ``concurrency`` threads (what the ``thread`` runner does), and the first failure is raised.
    """
    if in_flow_run():
        futures = [task.submit(*args) for args in calls]
        return [future.result() for future in futures]
    if len(calls) <= 1 or concurrency <= 1:
        return [task.fn(*args) for args in calls]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda args: task.fn(*args), calls))


@contextlib.contextmanager
def submitter(task: Any, concurrency: int, plain: Callable[..., Any] | None = None) -> Iterator[Callable[..., Any]]:
    """``submit(*args)``, a future of ``task(*args)``: ``task.submit`` in a flow run (the flow's task runner);
    inline, ``plain`` (default ``task.fn``; give one that retries as the task would) on a pool of
    ``concurrency`` threads, which the end of the block waits for. Collect with :func:`next_done`."""
    if in_flow_run():
        yield task.submit
        return
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="pxflow-task") as pool:
        yield lambda *args: pool.submit(plain or task.fn, *args)


def next_done(futures: Sequence[Any]) -> Any:
    """The first of ``futures`` (from one :func:`submitter`) to finish."""
    if in_flow_run():
        from prefect.futures import as_completed

        return next(as_completed(list(futures)))
    done, _ = wait(futures, return_when=FIRST_COMPLETED)
    return next(future for future in futures if future in done)


def flow_state(flow: Any, /, inline: bool | None = None, **params: Any) -> Any:
    """The final Prefect ``State`` of ``flow(**params)``.

    Not inline: a flow run (a subflow inside one). Inline (default: when not in a flow run, where a
    subflow call would need a server): the body ``flow.fn(**params)`` in this thread, its outcome as
    the state a flow run would end in (a returned state as is, a value ``Completed``, an exception
    ``Failed`` whose ``result()`` raises it), so callers read both the same way.
    """
    from prefect.states import Completed, Failed, State

    if inline is None:
        inline = not in_flow_run()
    if not inline:
        return flow(**params, return_state=True)
    try:
        out = flow.fn(**params)
    except Exception as exc:  # noqa: BLE001 - a failed run, as its state
        return Failed(message=f"{type(exc).__name__}: {exc}", data=exc)
    return out if isinstance(out, State) else Completed(data=out)
