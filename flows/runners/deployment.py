"""Runner ``deployment``: one child flow run per group of shards of a deployment (on a GPU pool, say).

The flow submits the groups with an idempotency key each and waits for them
(:func:`pxflow.flows.groups.fan_out_to_deployment`); the shards run on the deployment's
workers, which check their device themselves, so this machine validates the models on its CPU.
"""

from __future__ import annotations

from typing import Any

from .base import Runner


class DeploymentRunner(Runner):
    name = "deployment"
    description = "child flow runs of a deployment, one per group of shards"
    runs_tasks = False

    def task_runner(self, concurrency: int, address: str | None = None, device: str = "cpu") -> Any:
        raise ValueError(f"runner {self.name!r} does not run tasks in this flow")

    def shard_tags(self, device: str) -> list[str]:
        return []  # the group flow run tags its shards with its own machine's GPU slot

    def shards_run_here(self, address: str | None) -> bool:
        return False

    def validation_device(self, device: str) -> str:
        return "cpu"  # the models run on the deployment's pool; this machine may have no GPU

    def preflight(self, options: Any) -> None:
        """With a Prefect server of the user's (``PREFECT_API_URL``): the deployment exists there."""
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            self.check_server(options)

    def check_server(self, options: Any) -> None:
        from ..groups import check_deployment

        check_deployment(options.deployment)

    def fan_out(self, job: Any, input: str, options: Any, everything: bool) -> dict[str, Any]:
        from ..groups import fan_out_to_deployment

        return fan_out_to_deployment(job, input, options, everything)
