"""Runner ``process``: Prefect's ``ProcessPoolTaskRunner``, a local pool of worker processes.

The workers split the machine's cores and start as :func:`.workers.setup_worker` says
(the parent's API, the plug-ins, one API client).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .base import Runner, shared_threads
from .workers import setup_worker, worker_env, worker_imports


class ProcessRunner(Runner):
    name = "process"
    description = "a local pool of worker processes"

    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=max(1, concurrency), initializer=_process_init,
                                     initargs=(worker_env(), worker_imports(), list(sys.path)))

    def threads_per_worker(self, concurrency: int, address: str | None) -> int | None:
        return shared_threads(concurrency)


def _process_init(env: dict[str, str], modules: list[str], path: list[str]) -> None:
    os.environ.update(env)
    setup_worker(modules, path)
