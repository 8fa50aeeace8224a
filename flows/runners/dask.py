"""Runner ``dask``: a Dask cluster: an existing one (``dask_address``) or a local one of worker processes.

On a GPU each shard task asks for the worker resource ``GPU: 1``; the local cluster gives each
worker process one GPU (``CUDA_VISIBLE_DEVICES``) and that resource. Local workers preload this
module (:func:`dask_setup`: plug-ins, ``PXFLOW_WORKER_IMPORTS``, one API client); the workers of an
existing cluster are configured by whoever runs it (Prefect ships its settings with each task).
"""

from __future__ import annotations

from typing import Any, ContextManager

from .base import Runner, is_gpu, shared_threads
from .workers import setup_worker, visible_gpus, worker_env, worker_imports


class ClusterRunner(Runner):
    """A runner whose shards run on a cluster's workers: local ones it starts, or an existing one's."""

    #: the ``AnnotateOptions`` field naming an existing cluster
    address_option: str = ""

    def address(self, options: Any) -> str | None:
        return getattr(options, self.address_option, None)

    def shard_tags(self, device: str) -> list[str]:
        return []  # the cluster's own GPU resources place the shards (submit_context)

    def shards_run_here(self, address: str | None) -> bool:
        return not address

    def threads_per_worker(self, concurrency: int, address: str | None) -> int | None:
        return None if address else shared_threads(concurrency)

    def pins_gpu(self, address: str | None) -> bool:
        """Whether each worker sees exactly the one GPU it was given."""
        return not address

    def worker_device(self, device: str, address: str | None) -> str:
        return "gpu:0" if is_gpu(device) and self.pins_gpu(address) else device


class DaskRunner(ClusterRunner):
    name = "dask"
    description = "a Dask cluster (dask_address, or a local one)"
    required_module = "prefect_dask"
    extra = "dask"
    address_option = "dask_address"

    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        self.require()
        from prefect_dask import DaskTaskRunner

        if address:  # its workers' environment is theirs; Prefect ships its settings (the API URL) with each task
            return DaskTaskRunner(address=address)
        if is_gpu(device):
            return DaskTaskRunner(cluster_class=gpu_local_cluster,
                                  cluster_kwargs={"n_workers": max(1, concurrency), "gpus": visible_gpus(),
                                                  "env": worker_env(), "preload": dask_preload()})
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(concurrency))

    def submit_context(self, device: str) -> ContextManager:
        if not is_gpu(device):
            return super().submit_context(device)
        import dask

        return dask.annotate(resources={"GPU": 1})


def gpu_local_cluster(n_workers: int, gpus: list[str], env: dict[str, str], preload: list[str], **scheduler: Any):
    """A local Dask cluster with one worker process per GPU, pinned by ``CUDA_VISIBLE_DEVICES``, each with ``GPU: 1``."""
    from distributed import Nanny, Scheduler, SpecCluster

    gpus = gpus or ["0"]
    workers = {
        f"gpu-{gpu}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "resources": {"GPU": 1}, "env": {**env, "CUDA_VISIBLE_DEVICES": gpu},
                        "preload": preload, "host": "127.0.0.1"},
        }
        for gpu in gpus[: max(1, n_workers)]
    }
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}})


def local_cluster_kwargs(concurrency: int) -> dict[str, Any]:
    """``distributed.LocalCluster`` settings of runner ``dask`` on the CPU: one single-threaded worker process per
    shard at once, on loopback, reporting to this process's Prefect API, with the preloads above."""
    return {
        "n_workers": max(1, concurrency),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "env": worker_env(),
        "preload": dask_preload(),
    }


def dask_preload() -> list[str]:
    """Modules local Dask workers preload: this one (:func:`dask_setup`) and ``PXFLOW_WORKER_IMPORTS``."""
    return [__name__, *worker_imports()]


def dask_setup(worker: Any) -> None:
    """Dask preload hook of the local clusters started here: the plug-ins and one API client (the worker
    imports are preloads of their own, after this one)."""
    setup_worker(())
