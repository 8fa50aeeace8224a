"""Fan-out modes by name: where the shard tasks of a run execute.

Each mode is a :class:`Runner` (:mod:`.base`, modelled on Prefect's ``TaskRunner``): it builds
a Prefect task runner for a concurrency, an address and a device, or (``deployment``) replaces
the in-flow fan-out by child flow runs of a deployment (:mod:`..groups`). Every mode writes
the same rows (``tests/test_fanout.py``).

- ``thread`` (default, :mod:`.thread`): a thread pool in the flow's process; one loaded pipeline shared.
- ``process`` (:mod:`.process`): Prefect's ``ProcessPoolTaskRunner``, a local pool of worker processes.
- ``dask`` (:mod:`.dask`): an existing Dask cluster (``dask_address``) or a local one of worker processes.
- ``ray`` (:mod:`.ray`): ``prefect-ray`` (the ``ray`` extra): an existing cluster (``ray_address``) or a local one.
- ``deployment`` (:mod:`.deployment`): one child flow run per group of shards of a deployment.

Adding a mode is a :class:`Runner` subclass and :func:`register_runner` (from a plug-in's
``pxflow.plugins`` entry point, :mod:`pxflow.pipelines.plugins`); the CLI and the flow options
read their choices from :func:`runner_names` after the plug-ins load. Workers started here
start as :mod:`.workers` says; a Dask worker you start yourself does the same with
``dask worker --preload pxflow.flows.runners`` (:func:`dask_setup`).
"""

from __future__ import annotations

from pxflow.pipelines.plugins import load_plugins

from .base import Runner
from .dask import ClusterRunner, DaskRunner, dask_preload, dask_setup, gpu_local_cluster, local_cluster_kwargs
from .deployment import DeploymentRunner
from .process import ProcessRunner
from .ray import RayRunner
from .slots import GPU_SLOT_PREFIX, ensure_slot_limit, gpu_slot_tag, gpu_slot_tags
from .thread import ThreadRunner
from .workers import WORKER_IMPORTS_ENV, api_url, hold_api_client, import_modules, visible_gpus, worker_env, worker_imports

RUNNERS: dict[str, Runner] = {}


def register_runner(runner: Runner) -> None:
    """Offer ``runner`` under ``runner.name`` (replacing any earlier one of that name)."""
    if not isinstance(runner, Runner):
        raise TypeError(f"register_runner() takes a pxflow.flows.runners.Runner instance, got {runner!r}")
    if not runner.name:
        raise ValueError(f"{type(runner).__name__} has no name")
    RUNNERS[runner.name] = runner


for _builtin in (ThreadRunner(), ProcessRunner(), DaskRunner(), RayRunner(), DeploymentRunner()):
    register_runner(_builtin)


def runner_names() -> list[str]:
    """The registered runners' names (the plug-ins' once :func:`load_plugins` ran)."""
    return list(RUNNERS)


def get_runner(name: str) -> Runner:
    """The runner called ``name``, installed plug-ins included; a ``ValueError`` naming the choices otherwise."""
    if name not in RUNNERS:
        load_plugins()
    try:
        return RUNNERS[name]
    except KeyError:
        raise ValueError(f"runner must be one of {runner_names()}, got {name!r}") from None


__all__ = [
    "GPU_SLOT_PREFIX",
    "WORKER_IMPORTS_ENV",
    "ClusterRunner",
    "DaskRunner",
    "DeploymentRunner",
    "ProcessRunner",
    "RayRunner",
    "Runner",
    "ThreadRunner",
    "api_url",
    "dask_preload",
    "dask_setup",
    "ensure_slot_limit",
    "get_runner",
    "gpu_local_cluster",
    "gpu_slot_tag",
    "gpu_slot_tags",
    "hold_api_client",
    "import_modules",
    "local_cluster_kwargs",
    "register_runner",
    "runner_names",
    "visible_gpus",
    "worker_env",
    "worker_imports",
]
