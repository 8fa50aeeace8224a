"""Storage for a task, built in the worker from a Prefect block name: secrets never travel as parameters.

A flow run's parameters, task inputs and logs are stored in Prefect's database and shown by
its API; S3 keys there would be readable by anyone who can read the run. So flows and jobs
carry the *name* of a ``Secret`` block (a JSON object of
:class:`pxflow.pipelines.io.storage.S3Settings` fields) and each worker process resolves it
here, once per name.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pxflow.pipelines.io.storage import Storage, default_storage

_lock = threading.Lock()
_resolved: dict[str, Storage] = {}


def s3_settings_from_block(name: str) -> dict[str, Any]:
    """The S3 settings a Prefect ``Secret`` block holds (a JSON object)."""
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of S3 settings")
    return value


def storage_for(block: str | None) -> Storage:
    """The storage a job names: the environment's, or one configured from the block ``block``."""
    if not block:
        return default_storage()
    with _lock:
        found = _resolved.get(block)
        if found is None:
            found = _resolved[block] = Storage(s3=s3_settings_from_block(block))
        return found
