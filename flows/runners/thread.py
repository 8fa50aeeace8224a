"""Runner ``thread`` (the default): a thread pool in the flow's process; one loaded pipeline shared."""

from __future__ import annotations

from typing import Any

from .base import Runner


class ThreadRunner(Runner):
    name = "thread"
    description = "a thread pool in the flow's process"
    in_process = True

    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, concurrency))
