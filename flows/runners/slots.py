"""GPU slots: one Prefect global concurrency limit of 1 per GPU of a machine, applied by task tags.

A shard task tagged ``pxflow-gpu-<host>-<n>`` waits for that GPU's slot, so one GPU never runs
two shards at once whichever local runner (or deployment group) submits them.
"""

from __future__ import annotations

import contextlib

from pxflow.pipelines.models.backends import parse_device

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
