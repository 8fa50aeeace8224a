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
- :func:`submitter` / :func:`next_done`: a stream of task submissions (the annotate shards), to an
  entered Prefect task runner or to a thread pool;
- :func:`flow_state`: a (sub)flow's final state, or its body's outcome as one (:class:`InlineState`);
- :func:`failed_state`: what a body returns to end its run failed with a result (Prefect's ``Failed``);
- :func:`in_flow_run` / :func:`flow_run_id`: for what only exists in a run (artifacts, concurrency limits).

None of them imports Prefect outside a flow run: an inline body (the CLI's default) never pays
Prefect's ~1 s import. The flows themselves are the same bodies decorated in Prefect modules
(:mod:`.annotate`, :mod:`.backfill`), which a flow run imports anyway.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence


def in_flow_run() -> bool:
    """True inside a Prefect flow run (a Prefect API records it), False when a body runs inline.

    A process that never imported Prefect's run context cannot be in a flow run, so the question
    is answered without importing Prefect (which takes ~1 s)."""
    if "prefect.context" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def flow_run_id() -> str | None:
    """The current flow run's id, None inline."""
    if not in_flow_run():
        return None
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return None if run_id is None else str(run_id)


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
def submitter(task: Any, concurrency: int, plain: Callable[..., Any], task_runner: Any = None
              ) -> Iterator[Callable[..., Any]]:
    """``submit(*args)``, a future of ``task(*args)``: with ``task_runner`` (an entered Prefect ``TaskRunner``,
    in a flow run) a task run of the Prefect task ``task`` on it; inline (none), ``plain`` (a function that
    retries as the task would) on a pool of ``concurrency`` threads, which the end of the block waits for.
    Collect with :func:`next_done`."""
    if task_runner is not None:
        from prefect.utilities.callables import get_call_parameters

        yield lambda *args: task_runner.submit(task, parameters=get_call_parameters(task.fn, args, {}))
        return
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="pxflow-task") as pool:
        yield lambda *args: pool.submit(plain, *args)


def next_done(futures: Sequence[Any]) -> Any:
    """The first of ``futures`` (from one :func:`submitter`) to finish."""
    if in_flow_run():
        from prefect.futures import as_completed

        return next(as_completed(list(futures)))
    done, _ = wait(futures, return_when=FIRST_COMPLETED)
    return next(future for future in futures if future in done)


class FailedRunError(RuntimeError):
    """An inline body ended failed without an exception of its own (:func:`failed_state`): its message."""


@dataclass
class InlineState:
    """How an inline body ended, read like the Prefect ``State`` a flow run ends in (the part callers use:
    :meth:`is_completed`, :meth:`result`, ``message``), without importing Prefect."""

    completed: bool
    data: Any = None
    message: str | None = None

    def is_completed(self) -> bool:
        return self.completed

    def result(self, raise_on_failure: bool = True) -> Any:
        """The body's value; failed: its exception raised (or a :class:`FailedRunError` with the message),
        or with ``raise_on_failure=False`` the data as is (a summary, or the exception), as Prefect does."""
        if not self.completed and raise_on_failure:
            raise self.data if isinstance(self.data, BaseException) else FailedRunError(self.message)
        return self.data


def failed_state(message: str, data: Any = None) -> Any:
    """What a body returns to end failed with ``data`` as its result (a summary): Prefect's ``Failed`` in a
    flow run, an :class:`InlineState` inline."""
    if in_flow_run():
        from prefect.states import Failed

        return Failed(message=message, data=data)
    return InlineState(completed=False, data=data, message=message)


def flow_state(flow: Any, /, inline: bool | None = None, **params: Any) -> Any:
    """The final state of ``flow(**params)``: a Prefect ``State`` or an :class:`InlineState`, read the same way.

    Not inline: a flow run (a subflow inside one) of the Prefect flow ``flow``. Inline (default: when not
    in a flow run, where a subflow call would need a server): the body (``flow.fn``, or ``flow`` itself when
    it is the plain function) in this thread, its outcome as the state a flow run would end in (a returned
    state as is, a value completed, an exception failed with ``result()`` raising it).
    """
    if inline is None:
        inline = not in_flow_run()
    if not inline:
        return flow(**params, return_state=True)
    try:
        out = getattr(flow, "fn", flow)(**params)
    except Exception as exc:  # noqa: BLE001 - a failed run, as its state
        return InlineState(completed=False, data=exc, message=f"{type(exc).__name__}: {exc}")
    return out if isinstance(out, InlineState) else InlineState(completed=True, data=out)
