"""Shards and run keys: pure functions of the inputs, the configuration and the models.

A shard is up to ``shard_size`` inputs still to annotate (:mod:`.plan` decides which).
Its id hashes the shard size and its inputs (URI and content tag) in order, so the same
work cut the same way gives the same id on every run and every machine, and the id
names the shard's commit in the tables (:mod:`.lake`). The run key hashes what decides
the rows: the pipeline config, the model and index checksums and the per-call options;
never paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from pxflow.pipelines.predictors import PipelineIdentity
from pxflow.pipelines.settings import PxflowSettings

#: Default images per shard. Prefect's per-task overhead measured ~5-7 ms (thread runner, ephemeral
#: server; BENCHMARKS.md), negligible next to a shard's ~10 s of inference at 20 ms/image; the binding
#: constraint is the number of task runs: 100k images -> 200 shards, which the API handles easily.
DEFAULT_SHARD_SIZE = 500
#: bump when the table schema or row semantics change, so old rows are not mistaken for new ones
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Shard:
    """One unit of work: its id, its position in the plan, its URIs and their per-input options."""

    shard_id: str
    index: int
    uris: tuple[str, ...] = field(repr=False)
    options: tuple[dict[str, Any] | None, ...] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.uris)


def shard_id(uris: Iterable[str], shard_size: int) -> str:
    """Hash of the shard size and the URIs in order (16 hex digits)."""
    digest = hashlib.sha256(f"pxflow-shard-v1\n{int(shard_size)}\n".encode())
    for uri in uris:
        digest.update(uri.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


#: config keys that say where a model or index lives: the checksums identify them, not their paths
LOCATION_KEYS = frozenset({"model_dir", "model_name", "index"})


def _without_locations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_locations(v) for k, v in node.items() if k not in LOCATION_KEYS}
    if isinstance(node, list):
        return [_without_locations(v) for v in node]
    return node


def run_key(config: dict[str, Any], identity: PipelineIdentity, predict_kwargs: dict[str, Any] | None = None) -> str:
    """Hash of what decides the rows: the config (minus speed-only settings and model/index paths),
    every model's and the index's checksum (:meth:`Pipeline.identity`) and the per-call options.

    Two spellings of one model directory (``$M`` vs ``$(realpath $M)/``) give the same key; a
    changed model file, a chained detector or a new index version give a new one.
    """
    cfg = dict(config)
    cfg["Pxflow"] = PxflowSettings.from_mapping(config.get("Pxflow")).semantic()
    kwargs = {k: v for k, v in (predict_kwargs or {}).items() if k not in LOCATION_KEYS}
    payload = canonical_json(
        {"schema": SCHEMA_VERSION, "config": _without_locations(cfg), "models": identity.checksums(), "kwargs": kwargs}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
