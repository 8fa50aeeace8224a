"""Shards and where their outputs live: pure functions of the inputs, the run and the output root.

A shard is ``shard_size`` consecutive input URIs. Its id hashes the URIs and
the shard size, so the same input set cut the same way gives the same ids on
every run, on every machine. The run key hashes what decides the rows (the
pipeline config, the model checksum, the per-call options), so a shard's
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

#: Default images per shard. Prefect's per-task overhead measured ~5-7 ms (thread runner, ephemeral
#: server; BENCHMARKS.md), negligible next to a shard's ~10 s of inference at 20 ms/image; the binding
#: constraint is the number of task runs: 100k images -> 200 shards, which the API handles easily.
DEFAULT_SHARD_SIZE = 500
#: bump when the Parquet schema or row semantics change, so old outputs are not mistaken for new ones
SCHEMA_VERSION = 1
TABLES = ("objects", "images")


@dataclass(frozen=True)
class Shard:
    """One unit of work: its id, its position in the plan and its URIs."""

    shard_id: str
    index: int
    uris: tuple[str, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.uris)


def shard_id(uris: Iterable[str], shard_size: int) -> str:
    """Hash of the shard size and the URIs in order (16 hex digits)."""
    digest = hashlib.sha256(f"pxflow-shard-v1\n{int(shard_size)}\n".encode())
    for uri in uris:
        digest.update(uri.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def plan_shards(uris: Iterable[str], shard_size: int) -> Iterator[Shard]:
    """Cut a URI stream into shards as it arrives (only one shard's URIs are held at a time)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    chunk: list[str] = []
    index = 0
    for uri in uris:
        chunk.append(uri)
        if len(chunk) == shard_size:
            yield Shard(shard_id(chunk, shard_size), index, tuple(chunk))
            index += 1
            chunk = []
    if chunk:
        yield Shard(shard_id(chunk, shard_size), index, tuple(chunk))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


#: ``Pxflow`` settings that change speed, not rows: they stay out of the run key.
NON_SEMANTIC_SETTINGS = ("cpu_threads", "load_workers", "prefetch", "infer_workers")


def run_key(config: dict[str, Any], model_sha256: str, predict_kwargs: dict[str, Any] | None = None) -> str:
    """Hash of the pipeline config (minus speed-only settings), model checksum and per-call options."""
    cfg = dict(config)
    cfg["Pxflow"] = {k: v for k, v in (config.get("Pxflow") or {}).items() if k not in NON_SEMANTIC_SETTINGS}
    payload = canonical_json(
        {"schema": SCHEMA_VERSION, "config": cfg, "model": model_sha256, "kwargs": predict_kwargs or {}}
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
