"""What every worker process started for a run gets before its first task.

Local workers (process-pool, local Dask and Ray workers) get the parent's ``PREFECT_API_URL``,
so they report to its server instead of starting their own; they load the installed plug-ins
(:func:`pxflow.pipelines.plugins.load_plugins`, the ``pxflow.plugins`` entry points) and import
the modules named in ``PXFLOW_WORKER_IMPORTS`` (comma-separated: plug-ins that register on
import, without an entry point), so a plug-in's stores, pipelines and predictors resolve there
too. Each holds one Prefect API client for all its task runs (:func:`hold_api_client`), which
takes ~30 ms off the start-up of each shard task there (BENCHMARKS.md, fan-out).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys

from pxflow.pipelines.plugins import load_plugins

WORKER_IMPORTS_ENV = "PXFLOW_WORKER_IMPORTS"


def worker_imports() -> list[str]:
    return [m.strip() for m in os.environ.get(WORKER_IMPORTS_ENV, "").split(",") if m.strip()]


def import_modules(modules: list[str] | tuple[str, ...], path: list[str] | None = None) -> None:
    """Run in each worker process before any task: the parent's sys.path, the plug-ins, then ``modules``."""
    for entry in path or []:
        if entry not in sys.path:
            sys.path.append(entry)
    load_plugins()
    for module in modules:
        importlib.import_module(module)


def setup_worker(modules: list[str] | tuple[str, ...] | None = None, path: list[str] | None = None) -> None:
    """The whole start-up of a worker process: plug-ins, ``PXFLOW_WORKER_IMPORTS``, one API client."""
    import_modules(worker_imports() if modules is None else modules, path)
    hold_api_client()


def api_url() -> str | None:
    """The Prefect API this process reports to (a configured one, or a running temporary server)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        if getattr(server, "running", False) and server.port:
            return server.api_url
    return None


def worker_env() -> dict[str, str]:
    """Environment every local worker gets: the parent's API (never a server of its own) and settings."""
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    url = api_url()
    if url:
        env["PREFECT_API_URL"] = url
    for name in (WORKER_IMPORTS_ENV, "PXFLOW_CPU_THREADS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``, else none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(Exception):
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def hold_api_client() -> None:
    """Give this worker process one Prefect API client that every task run in it reuses.

    Prefect's engine takes the client of an active ``SyncClientContext`` (its documented
    single source of sync clients) and otherwise opens two new ones per task run, each
    building a certificate store (~18 ms apiece) and a new connection: most of a remote shard
    task's start-up. Entered once in the thread that runs the tasks, never left (the process
    ends with the pool).
    """
    from prefect.context import SyncClientContext

    if SyncClientContext.get() is None:
        SyncClientContext().__enter__()
