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
from typing import Any, Iterator

from pxflow.pipelines.models import load_model_spec, resolve_model_dir
from pxflow.pipelines.registry import create_pipeline

from .shards import canonical_json

_lock = threading.Lock()
_pipelines: dict[str, Any] = {}
#: how many times this process loaded each key (tests and the shard summaries read it)
LOADS: Counter = Counter()


def model_sections(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, section)`` for every model a pipeline config names (SubModules, nested SubPipelines)."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if not isinstance(node, dict):
            return
        if ("model_dir" in node or "model_name" in node) and path:
            yield path, node
            return
        for key in ("SubModules", "SubPipelines"):
            for name, child in (node.get(key) or {}).items():
                yield from walk(child, f"{path}.{name}" if path else name)

    yield from walk(config, "")


def model_identity(config: dict[str, Any]) -> tuple[str, str]:
    """``(model_name, model_sha256)`` over every model of the pipeline.

    A given ``model_dir`` names the model by its own ``inference.yml`` (the
    config's default ``model_name`` may not match the files). Several models
    are joined with ``+`` and their checksums hashed together in config order.
    """
    names: list[str] = []
    sums: list[str] = []
    for _, section in model_sections(config):
        if not (section.get("model_dir") or section.get("model_name")):
            continue
        spec = load_model_spec(resolve_model_dir(section.get("model_name"), section.get("model_dir")))
        names.append(spec.model_name if section.get("model_dir") else str(section.get("model_name")))
        sums.append(spec.sha256())
    if not sums:
        raise ValueError("the pipeline config names no model (SubModules.*.model_name/model_dir)")
    if len(sums) == 1:
        return names[0], sums[0]
    return "+".join(names), hashlib.sha256("\n".join(sums).encode()).hexdigest()


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


def process_stats() -> dict[str, Any]:
    """This process's id and its loads, for shard summaries (to show reuse across shards)."""
    return {"pid": os.getpid(), "model_loads": sum(LOADS.values())}
