"""Fan-out modes by name: where the shard tasks of a run execute.

Each entry (:class:`Runner`) builds a Prefect ``TaskRunner`` (Prefect's own plug-in
interface) for a concurrency, an address and a device, or (``deployment``) replaces the
in-flow fan-out by child flow runs of a deployment (:mod:`.groups`). Adding a fan-out mode
is adding an entry (:func:`register_runner`); the CLI and the flow options read their
choices from here. Every mode writes the same rows (``tests/test_fanout.py``).

- ``thread`` (default): a thread pool in the flow's process; one loaded pipeline shared.
- ``process``: Prefect's ``ProcessPoolTaskRunner``, a local pool of worker processes.
- ``dask``: a Dask cluster: an existing one (``dask_address``) or a local one of worker
  processes. On a GPU each shard task asks for the worker resource ``GPU: 1``; the local
  cluster gives each worker process one GPU (``CUDA_VISIBLE_DEVICES``) and that resource.
- ``ray``: ``prefect-ray`` (the ``ray`` extra): an existing cluster (``ray_address``) or a
  local one; on a GPU each shard task asks for ``num_gpus=1`` and Ray pins it.
- ``deployment``: the flow submits one child flow run per group of shards to a deployment
  (on a GPU work pool, say), with an idempotency key per group, and waits for them.

Workers started here (local Dask workers, process-pool and Ray workers) get the parent's
``PREFECT_API_URL``, so they report to its server instead of starting their own, and import
the modules named in ``PXFLOW_WORKER_IMPORTS`` (comma-separated) before any task, so
pipelines registered at import (a plug-in without an entry point) resolve there too. Each
holds one Prefect API client for all its task runs (:func:`hold_api_client`), which takes
~30 ms off the start-up of each shard task there (BENCHMARKS.md, fan-out).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from pxflow.pipelines.models.backends import default_threads, parse_device

#: ``factory(concurrency, address, device) -> TaskRunner``; 2-argument factories (older plug-ins) still work
RunnerFactory = Callable[..., Any]
WORKER_IMPORTS_ENV = "PXFLOW_WORKER_IMPORTS"


@dataclass(frozen=True)
class Runner:
    """One fan-out mode."""

    name: str
    #: builds the Prefect task runner; None for modes that do not run tasks in this flow (``deployment``)
    factory: RunnerFactory | None
    #: its shards run in other processes on this machine: they split the cores
    local_processes: bool = False
    #: device -> a context wrapped around each shard submission (GPU resource requests)
    submit_context: Callable[[str], ContextManager] | None = None
    #: its local workers each see exactly one GPU (pinned), which they call ``gpu:0``
    pins_gpus: bool = False
    #: ``fan_out(job, input, options, everything) -> outcome`` replacing the in-flow shard loop
    fan_out: Callable[..., dict[str, Any]] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def worker_imports() -> list[str]:
    return [m.strip() for m in os.environ.get(WORKER_IMPORTS_ENV, "").split(",") if m.strip()]


def import_modules(modules: list[str] | tuple[str, ...], path: list[str] | None = None) -> None:
    """Run in each worker process before any task: the parent's sys.path, then the plug-in modules."""
    for entry in path or []:
        if entry not in sys.path:
            sys.path.append(entry)
    for module in modules:
        importlib.import_module(module)


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


def _thread(concurrency: int, address: str | None = None, device: str = "cpu"):
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max(1, concurrency))


def _set_env(env: dict[str, str]) -> None:
    os.environ.update(env)


def _process_init(env: dict[str, str], modules: list[str], path: list[str]) -> None:
    _set_env(env)
    import_modules(modules, path)
    hold_api_client()


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


def _process(concurrency: int, address: str | None = None, device: str = "cpu"):
    from prefect.task_runners import ProcessPoolTaskRunner

    return ProcessPoolTaskRunner(
        max_workers=max(1, concurrency), initializer=_process_init, initargs=(worker_env(), worker_imports(), list(sys.path))
    )


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


def _dask(concurrency: int, address: str | None = None, device: str = "cpu"):
    require_runner("dask")
    from prefect_dask import DaskTaskRunner

    if address:  # its workers' environment is theirs; Prefect ships its settings (the API URL) with each task
        return DaskTaskRunner(address=address)
    if parse_device(device)[0] == "gpu":
        return DaskTaskRunner(cluster_class=gpu_local_cluster,
                              cluster_kwargs={"n_workers": max(1, concurrency), "gpus": visible_gpus(), "env": worker_env(),
                                              "preload": dask_preload()})
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(concurrency))


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
    """Dask preload hook of the local clusters started here: one API client for the worker's tasks."""
    hold_api_client()


def _dask_gpu(device: str) -> ContextManager:
    if parse_device(device)[0] != "gpu":
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources={"GPU": 1})


def _ray(concurrency: int, address: str | None = None, device: str = "cpu"):
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ValueError("runner ray needs the ray extra: pip install 'pxflow[ray]'") from None
    env = {**worker_env(), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    runtime_env: dict[str, Any] = {"env_vars": env, "worker_process_setup_hook": "pxflow.flows.runners.ray_worker_setup"}
    if address:
        return RayTaskRunner(address=address, init_kwargs={"runtime_env": runtime_env})
    init = {"num_cpus": max(1, concurrency), "include_dashboard": False, "runtime_env": runtime_env,
            "log_to_driver": False}
    gpus = visible_gpus()
    if parse_device(device)[0] == "gpu":
        init["num_gpus"] = len(gpus)
    return RayTaskRunner(init_kwargs=init)


def ray_worker_setup() -> None:
    import_modules(worker_imports())
    hold_api_client()


def _ray_gpu(device: str) -> ContextManager:
    if parse_device(device)[0] != "gpu":
        return contextlib.nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=1)


def _deployment_fan_out(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from .groups import fan_out_to_deployment

    return fan_out_to_deployment(*args, **kwargs)


RUNNERS: dict[str, Runner] = {
    "thread": Runner("thread", _thread, description="a thread pool in the flow's process"),
    "process": Runner("process", _process, local_processes=True, description="a local pool of worker processes"),
    "dask": Runner("dask", _dask, local_processes=True, submit_context=_dask_gpu, pins_gpus=True,
                   description="a Dask cluster (dask_address, or a local one)"),
    "ray": Runner("ray", _ray, local_processes=True, submit_context=_ray_gpu, pins_gpus=True,
                  description="a Ray cluster (ray_address, or a local one; the ray extra)"),
    "deployment": Runner("deployment", None, fan_out=_deployment_fan_out,
                         description="child flow runs of a deployment, one per group of shards"),
}
#: runners whose shards run in other processes on this machine: they split the cores
LOCAL_PROCESS_RUNNERS = {name for name, r in RUNNERS.items() if r.local_processes}


def register_runner(
    name: str,
    factory: RunnerFactory | None,
    local_processes: bool = False,
    submit_context: Callable[[str], ContextManager] | None = None,
    pins_gpus: bool = False,
    fan_out: Callable[..., dict[str, Any]] | None = None,
) -> None:
    RUNNERS[name] = Runner(name, factory, local_processes, submit_context, pins_gpus, fan_out)
    if local_processes:
        LOCAL_PROCESS_RUNNERS.add(name)


def runner_names() -> list[str]:
    return list(RUNNERS)


def get_runner(runner: str) -> Runner:
    try:
        return RUNNERS[runner]
    except KeyError:
        raise ValueError(f"runner must be one of {runner_names()}, got {runner!r}") from None


def make_task_runner(runner: str, concurrency: int, address: str | None = None, device: str = "cpu"):
    """The Prefect task runner ``runner`` names, for ``concurrency`` shards at once on ``device``."""
    entry = get_runner(runner)
    if entry.factory is None:
        raise ValueError(f"runner {runner!r} does not run tasks in this flow")
    try:
        return entry.factory(concurrency, address, device)
    except TypeError as exc:
        if "positional argument" not in str(exc):
            raise
        return entry.factory(concurrency, address)  # a plug-in factory of the (concurrency, address) form


def submit_context(runner: str, device: str) -> ContextManager:
    """What to wrap each shard submission in (e.g. a GPU resource request); a no-op for most modes."""
    entry = get_runner(runner)
    return entry.submit_context(device) if entry.submit_context else contextlib.nullcontext()


def worker_device(runner: str, device: str, address: str | None) -> str:
    """``device`` as the shard's worker sees it: a worker pinned to one GPU calls it ``gpu:0``."""
    if parse_device(device)[0] == "gpu" and get_runner(runner).pins_gpus and (runner == "ray" or not address):
        return "gpu:0"
    return device


def threads_per_worker(runner: str, concurrency: int, address: str | None) -> int | None:
    """Inference threads per worker process: local worker processes share the cores instead of each taking all."""
    if runner in LOCAL_PROCESS_RUNNERS and not address:
        return max(1, default_threads() // max(1, concurrency))
    return None


#: tag prefix of the per-GPU slots (a Prefect global concurrency limit ``tag:<tag>`` of 1 each)
GPU_SLOT_PREFIX = "pxflow-gpu-"


def gpu_slot_tag(device: str, host: str | None = None) -> str:
    """``pxflow-gpu-<host>-<n>``: the tag of one GPU of one machine."""
    import socket

    _, index = parse_device(device)
    return f"{GPU_SLOT_PREFIX}{host or socket.gethostname()}-{index}"


def ensure_slot_limit(tag: str, limit: int = 1) -> None:
    """Create the global concurrency limit ``tag:<tag>`` (limit 1) that Prefect applies to tasks tagged ``tag``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"tag:{tag}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:
            with contextlib.suppress(Exception):  # created meanwhile by another run
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


def gpu_slot_tags(device: str) -> list[str]:
    """Tags for a shard that runs on ``device`` of this machine: one GPU never runs two shards at once."""
    if parse_device(device)[0] != "gpu":
        return []
    tag = gpu_slot_tag(device)
    ensure_slot_limit(tag)
    return [tag]


def local_device_check(runner: str, device: str, backend: str | None, address: str | None) -> None:
    """Fail before any work when the shards would run on this machine and it cannot use ``device``.

    ``deployment`` runs them on the deployment's pool, a remote Dask/Ray cluster on its
    workers: there the backends check the device themselves (a permanent shard failure).
    """
    from pxflow.pipelines.models.backends import require_device

    require_runner(runner)
    if runner == "deployment" or (runner in ("dask", "ray") and address):
        return
    require_device(device, backend)


#: runner -> (module it needs, the extra that installs it)
RUNNER_EXTRAS = {"dask": ("prefect_dask", "dask"), "ray": ("prefect_ray", "ray")}


def require_runner(runner: str) -> None:
    """A ``ValueError`` now (a usage error) when ``runner`` is unknown or its extra is not installed."""
    get_runner(runner)
    needed = RUNNER_EXTRAS.get(runner)
    if needed and importlib.util.find_spec(needed[0]) is None:
        raise ValueError(f"runner {runner} needs the {needed[1]} extra: pip install 'pxflow[{needed[1]}]'")
