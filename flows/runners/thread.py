"""Runner ``thread`` (the default): a thread pool in the flow's process; one loaded pipeline shared."""

from __future__ import annotations

from typing import Any

from .base import Runner


class ThreadRunner(Runner):
    name = "thread"
    description = "a thread pool in the flow's process"
    in_process = True

    @property
    def runs_inline(self) -> bool:
        """Only the plain thread pool is replaced by the inline one: a subclass with a task runner of its own
        (a plug-in's) gets a flow run that uses it."""
        return type(self).task_runner is ThreadRunner.task_runner

    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, concurrency))
