"""Task runners by name: where the shard tasks of a run execute.

Each entry builds a Prefect ``TaskRunner`` (Prefect's own plug-in interface) for a
concurrency; adding a fan-out mode is adding an entry (:func:`register_runner`). The CLI
and the flow options read their choices from here.
"""

from __future__ import annotations

from typing import Any, Callable

from pxflow.pipelines.models.backends import default_threads

RunnerFactory = Callable[[int, "str | None"], Any]


def _thread(concurrency: int, address: str | None = None):
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max(1, concurrency))


def _dask(concurrency: int, address: str | None = None):
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
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


RUNNERS: dict[str, RunnerFactory] = {"thread": _thread, "dask": _dask}
#: runners whose shards run in other processes on this machine: they split the cores
LOCAL_PROCESS_RUNNERS = {"dask"}


def register_runner(name: str, factory: RunnerFactory, local_processes: bool = False) -> None:
    RUNNERS[name] = factory
    if local_processes:
        LOCAL_PROCESS_RUNNERS.add(name)


def runner_names() -> list[str]:
    return list(RUNNERS)


def make_task_runner(runner: str, concurrency: int, address: str | None = None):
    """The Prefect task runner ``runner`` names, for ``concurrency`` shards at once."""
    try:
        factory = RUNNERS[runner]
    except KeyError:
        raise ValueError(f"runner must be one of {runner_names()}, got {runner!r}") from None
    return factory(concurrency, address)


def threads_per_worker(runner: str, concurrency: int, address: str | None) -> int | None:
    """Inference threads per worker process: local worker processes share the cores instead of each taking all."""
    if runner in LOCAL_PROCESS_RUNNERS and not address:
        return max(1, default_threads() // max(1, concurrency))
    return None
