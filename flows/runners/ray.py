"""Runner ``ray``: ``prefect-ray`` (the ``ray`` extra): an existing cluster (``ray_address``) or a local one.

On a GPU each shard task asks for ``num_gpus=1`` and Ray pins it (the worker calls it ``gpu:0``,
on an existing cluster too). Workers run :func:`worker_setup` before any task.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ContextManager

from .base import is_gpu
from .dask import ClusterRunner
from .workers import setup_worker, visible_gpus, worker_env


class RayRunner(ClusterRunner):
    name = "ray"
    description = "a Ray cluster (ray_address, or a local one; the ray extra)"
    required_module = "prefect_ray"
    extra = "ray"
    address_option = "ray_address"

    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        self.require()
        from prefect_ray import RayTaskRunner

        env = {**worker_env(), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        runtime_env: dict[str, Any] = {"env_vars": env, "worker_process_setup_hook": f"{__name__}.worker_setup"}
        if address:
            return RayTaskRunner(address=address, init_kwargs={"runtime_env": runtime_env})
        init = {"num_cpus": max(1, concurrency), "include_dashboard": False, "runtime_env": runtime_env,
                "log_to_driver": False}
        if is_gpu(device):
            init["num_gpus"] = len(visible_gpus())
        return RayTaskRunner(init_kwargs=init)

    def pins_gpu(self, address: str | None) -> bool:
        return True  # Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigns, on any cluster

    def submit_context(self, device: str) -> ContextManager:
        if not is_gpu(device):
            return super().submit_context(device)
        from prefect_ray.context import remote_options

        return remote_options(num_gpus=1)


def worker_setup() -> None:
    """Ray's ``worker_process_setup_hook``: plug-ins, ``PXFLOW_WORKER_IMPORTS``, one API client."""
    setup_worker()
