"""Shards and where their outputs live: pure functions of the inputs, the run and the output root.

A shard is ``shard_size`` consecutive input URIs. Its id hashes the URIs and
the shard size, so the same input set cut the same way gives the same ids on
every run, on every machine. The run key hashes what decides the rows (the
pipeline config, the model and index checksums, the per-call options; never paths), so a shard's
output location, ``(output root, partition, run key, shard id)``, is known
before any work starts, and "is it done?" is one lookup of its commit marker.

Layout under the output root (``{p}`` is an optional Hive partition such as
``dt=2024-01-01/``)::

    objects/{p}run=<run_key>/part-<shard_id>.parquet    one row per detected object
    images/{p}run=<run_key>/part-<shard_id>.parquet     one row per input
    _commits/{p}run=<run_key>/<shard_id>.json           commit marker, written last
    _runs/{p}run=<run_key>/manifest.json                run manifest (counts, files, flow runs)
    _tmp/...                                            staging; readers ignore ``_``-prefixed dirs
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from pxflow.pipelines.io.uri import join_uri
from pxflow.pipelines.predictors import PipelineIdentity
from pxflow.pipelines.settings import PxflowSettings

#: Default images per shard. Prefect's per-task overhead measured ~5-7 ms (thread runner, ephemeral
#: server; BENCHMARKS.md), negligible next to a shard's ~10 s of inference at 20 ms/image; the binding
#: constraint is the number of task runs: 100k images -> 200 shards, which the API handles easily.
DEFAULT_SHARD_SIZE = 500
#: bump when the Parquet schema or row semantics change, so old outputs are not mistaken for new ones
SCHEMA_VERSION = 2
TABLES = ("objects", "images")


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


def plan_shards(entries: Iterable[Any], shard_size: int) -> Iterator[Shard]:
    """Cut a stream of URIs (or listing entries with ``.uri`` and ``.extra`` manifest columns) into shards as it
    arrives: only one shard's entries are held at a time."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    uris: list[str] = []
    options: list[dict[str, Any] | None] = []
    index = 0

    def cut() -> Shard:
        opts = tuple(options) if any(o for o in options) else None
        return Shard(shard_id(uris, shard_size), index, tuple(uris), opts)

    for entry in entries:
        uris.append(entry if isinstance(entry, str) else entry.uri)
        options.append(None if isinstance(entry, str) else (dict(getattr(entry, "extra", None) or {}) or None))
        if len(uris) == shard_size:
            yield cut()
            index += 1
            uris, options = [], []
    if uris:
        yield cut()


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


@dataclass(frozen=True)
class OutputLayout:
    """Every output location of one run (root, optional Hive partition, run key)."""

    root: str
    run_key: str
    partition: str | None = None  # e.g. "dt=2024-01-01"

    def _dir(self, top: str) -> str:
        parts = [top] + ([self.partition] if self.partition else []) + [f"run={self.run_key}"]
        return join_uri(self.root, *parts)

    def table_dir(self, table: str) -> str:
        return self._dir(table)

    def part_uri(self, table: str, shard: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return join_uri(self._dir(table), f"part-{shard}.parquet")

    def marker_uri(self, shard: str) -> str:
        return join_uri(self._dir("_commits"), f"{shard}.json")

    def manifest_uri(self) -> str:
        return join_uri(self._dir("_runs"), "manifest.json")

    def tmp_uri(self, name: str) -> str:
        """A unique staging key; ``_tmp`` is ignored by dataset readers, and a crash leaves only this."""
        return join_uri(self.root, "_tmp", f"{uuid.uuid4().hex}-{name}")
