"""What a fan-out mode is: :class:`Runner`, an abstract base in the manner of Prefect's ``TaskRunner``.

Everything the flows and the CLI need to know about where shard tasks run is a method here,
so no code outside the runner modules compares runner names: a plug-in runner (a subclass,
registered with :func:`pxflow.flows.runners.register_runner`) gets the same treatment as the
stock ones: GPU slot tags, the device check, core sharing, the CLI's ``--runner`` choices.
"""

from __future__ import annotations

import contextlib
import importlib.util
from abc import ABC, abstractmethod
from typing import Any, ContextManager

from pxflow.pipelines.models.backends import default_threads, parse_device

from .slots import gpu_slot_tags


class Runner(ABC):
    """One fan-out mode. Subclasses set :attr:`name` and implement :meth:`task_runner`; the other
    methods default to "the shards run in local processes of this machine, on the device given"."""

    #: the ``--runner`` / ``AnnotateOptions.runner`` value
    name: str = ""
    description: str = ""
    #: a module the runner needs (``prefect_dask``) and the pxflow extra that installs it (``dask``)
    required_module: str | None = None
    extra: str | None = None
    #: the shards run in the flow's own process: the pipeline loaded by the preflight is theirs to reuse
    in_process: bool = False
    #: the shards are tasks of this flow run (:meth:`task_runner`); False: :meth:`fan_out` replaces them
    runs_tasks: bool = True

    @property
    def runs_inline(self) -> bool:
        """With no Prefect server configured, the CLI may run the flow body inline and the shards as plain
        functions on a thread pool of its own, without this runner's :meth:`task_runner`. Default: no."""
        return False

    @abstractmethod
    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        """The Prefect ``TaskRunner`` for ``concurrency`` shards at once on ``device`` (``address``: an existing cluster)."""

    def address(self, options: Any) -> str | None:
        """The existing cluster ``options`` (an ``AnnotateOptions``) name for this runner; None: start a local one."""
        return None

    def submit_context(self, device: str) -> ContextManager:
        """What each shard submission is wrapped in (a GPU resource request); a no-op by default."""
        return contextlib.nullcontext()

    def shard_tags(self, device: str) -> list[str]:
        """Tags of each shard task: on a GPU of this machine, its slot (a global concurrency limit of 1),
        so one GPU never runs two shards at once."""
        return gpu_slot_tags(device)

    def worker_device(self, device: str, address: str | None) -> str:
        """``device`` as the shard's worker sees it (a worker pinned to one GPU calls it ``gpu:0``)."""
        return device

    def threads_per_worker(self, concurrency: int, address: str | None) -> int | None:
        """Inference threads per worker; None: the backend's default (the whole machine)."""
        return None

    def shards_run_here(self, address: str | None) -> bool:
        """Whether the shards run on this machine (so this machine must be able to use the device)."""
        return True

    def check_device(self, device: str, backend: str | None, address: str | None) -> None:
        """Fail before any work when the shards would run here and this machine cannot use ``device``.

        Elsewhere (a deployment's pool, a remote cluster) the backends check it themselves: a
        permanent shard failure there.
        """
        from pxflow.pipelines.models.backends import require_device

        self.require()
        if self.shards_run_here(address):
            require_device(device, backend)

    def validation_device(self, device: str) -> str:
        """Where the flow's process opens the models once to validate them before any shard."""
        return device

    def preflight(self, options: Any) -> None:
        """Checks before any Prefect server starts (a ``ValueError`` is a usage error). Default: none."""

    def check_server(self, options: Any) -> None:
        """Checks once the run's Prefect API is up (a ``ValueError`` is a usage error). Default: none."""

    def fan_out(self, job: Any, input: str, options: Any, everything: bool) -> dict[str, Any]:
        """Runners with ``runs_tasks = False``: plan and run the shards elsewhere; the outcome ``run_shards`` returns."""
        raise NotImplementedError(f"runner {self.name!r} runs its shards as tasks of the flow")

    def require(self) -> None:
        """A ``ValueError`` now (a usage error) when the module this runner needs is not installed."""
        if self.required_module and importlib.util.find_spec(self.required_module) is None:
            extra = self.extra or self.required_module
            raise ValueError(f"runner {self.name} needs the {extra} extra: pip install 'pxflow[{extra}]'")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def shared_threads(concurrency: int) -> int:
    """Inference threads of each of ``concurrency`` local worker processes: they split the cores."""
    return max(1, default_threads() // max(1, concurrency))


def is_gpu(device: str) -> bool:
    return parse_device(device)[0] == "gpu"
