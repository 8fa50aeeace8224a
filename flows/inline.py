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
- :func:`in_flow_run`: for what only exists in a run (artifacts, concurrency limits).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence


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
