"""One loaded pipeline per worker process, reused by every shard that process runs.

Loading a model (graph optimisation, weights) costs seconds; a shard is tens of
seconds of work, so loading per task would waste a visible share of the run.
The cache lives at module level, so it is per process: the thread runner's
tasks share one pipeline (ONNX Runtime sessions are thread-safe, the Paddle
backend hands each concurrent call its own cloned predictor), and each Dask worker process
loads its own once. The key is the pipeline config plus the model checksum,
so a changed model file is never served from a stale entry.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from typing import Any

from pxflow.pipelines.registry import create_pipeline

from .shards import canonical_json

_lock = threading.Lock()
_pipelines: dict[str, Any] = {}
#: how many times this process loaded each key (tests and the shard summaries read it)
LOADS: Counter = Counter()


def cache_key(config: dict[str, Any], model_sha256: str) -> str:
    return hashlib.sha256(f"{canonical_json(config)}\n{model_sha256}".encode()).hexdigest()[:16]


def get_pipeline(config: dict[str, Any], model_sha256: str) -> Any:
    """The process's pipeline for this config and model, loading it on first use."""
    key = cache_key(config, model_sha256)
    pipeline = _pipelines.get(key)
    if pipeline is not None:
        return pipeline
    with _lock:  # two shards starting together must not both load the model
        pipeline = _pipelines.get(key)
        if pipeline is None:
            pipeline = create_pipeline(config=config, device=config.get("device"))
            _pipelines[key] = pipeline
            LOADS[key] += 1
        return pipeline


def checked_pipeline(config: dict[str, Any], model_sha256: str, options: dict[str, Any], keep: bool) -> Any:
    """Open the models and validate the predict options once, before any shard is fanned out.

    Raises ``ValueError`` / ``TypeError`` for bad models, prompts, thresholds or options. With
    ``keep`` (shards will run in this process) the pipeline stays cached for them; a pipeline
    already cached here is validated, not loaded again.
    """
    from pxflow.pipelines.preflight import preflight

    key = cache_key(config, model_sha256)
    cached = _pipelines.get(key)
    if cached is not None:
        cached.check_predict_options(**options)
        return cached
    pipeline = preflight(config, options)
    if keep:
        with _lock:
            _pipelines.setdefault(key, pipeline)
    return pipeline


def process_stats() -> dict[str, Any]:
    """This process's id and its loads, for shard summaries (to show reuse across shards)."""
    return {"pid": os.getpid(), "model_loads": sum(LOADS.values())}
