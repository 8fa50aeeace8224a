"""Incremental planning: which listed inputs still need rows for this run key, cut into shards.

An input is identified by its identity (:func:`pxflow.pipelines.io.uri.input_identity`: the real
path of a local file, the normalised URI of a remote one) plus what the store says of its content
(the ETag, or ``mtime-size`` locally). Planning reads three columns of the ``images`` table for this run
key and partition (``image_uri``, ``etag``, ``retryable``: never the objects) and keeps an
input when it has no row, when its content changed since its row was written, or when its
row is a retryable failure (an outage, throttling). Everything else is skipped unchanged.
So late arrivals are picked up, rewritten images are re-annotated, and a rerun after a
crash finishes exactly what is missing.

The same input listed twice (a manifest naming it three times, in three spellings; a folder
and a symlink to it) is planned once, under its identity, and counted. Shards carry identities,
so the rows hold them and the next run's plan finds them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.io.stores import UnsupportedOperationError, UnsupportedSchemeError
from pxflow.pipelines.io.uri import input_identity

from .shards import Shard, shard_id

log = logging.getLogger(__name__)


@dataclass
class PlanStats:
    """What planning saw, for the run summary and the ``runs`` table."""

    listed: int = 0
    duplicates: int = 0
    unchanged: int = 0
    changed: int = 0
    retried: int = 0
    new: int = 0
    shards: int = 0
    listed_uris: set[str] = field(default_factory=set, repr=False)

    @property
    def todo(self) -> int:
        return self.new + self.changed + self.retried

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("listed", "duplicates", "unchanged", "changed", "retried", "new", "shards")}


def plan(
    entries: Iterable[Any],
    annotated: dict[str, tuple[str | None, bool]],
    shard_size: int,
    storage: Storage,
    stats: PlanStats,
    everything: bool = False,
) -> Iterator[Shard]:
    """Shards of the inputs that need rows (``everything``: all of them), as the listing streams."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    batch: list[tuple[str, str | None, dict[str, Any] | None]] = []
    index = 0
    for entry in entries:
        listed_as = entry if isinstance(entry, str) else entry.uri
        uri = input_identity(listed_as)  # what the shard reads and the tables hold for it
        if uri in stats.listed_uris:
            stats.duplicates += 1
            if stats.duplicates <= 5:
                log.warning("input listed more than once, annotated once: %s (as %s)", uri, ascii(listed_as))
            continue
        stats.listed_uris.add(uri)
        stats.listed += 1
        etag = None if isinstance(entry, str) else entry.etag
        previous = annotated.get(uri)
        if previous is not None and etag is None:  # a manifest entry: ask its store what it holds now
            etag = _current_etag(uri, storage)
        if not everything and previous is not None:
            old_etag, retryable = previous
            if retryable:
                stats.retried += 1
            elif old_etag is not None and etag is not None and old_etag != etag:
                stats.changed += 1
            else:
                stats.unchanged += 1
                continue
        else:
            stats.new += 1 if previous is None else 0
            stats.changed += 1 if previous is not None else 0
        options = None if isinstance(entry, str) else (dict(getattr(entry, "extra", None) or {}) or None)
        batch.append((uri, etag, options))
        if len(batch) == shard_size:
            stats.shards += 1  # counted when handed out: a consumer that stops early has planned it
            yield _shard(batch, index, shard_size)
            index += 1
            batch = []
    if batch:
        stats.shards += 1
        yield _shard(batch, index, shard_size)


def _current_etag(uri: str, storage: Storage) -> str | None:
    """The etag the store of ``uri`` reports now, whatever its scheme (a plug-in's too).

    None, so the input counts as unchanged, only when nothing can say: a store that cannot
    stat, a URI no store parses (its row is an error row already), a server that refuses the
    question (a URL whose HEAD fails), an object gone.
    """
    try:
        info = storage.stat(uri)
    except (UnsupportedOperationError, UnsupportedSchemeError, InputError):
        return None
    return info.etag if info is not None else None


def _shard(batch: list[tuple[str, str | None, dict[str, Any] | None]], index: int, shard_size: int) -> Shard:
    uris = tuple(u for u, _, _ in batch)
    options = tuple(o for _, _, o in batch)
    # content tags join the id: the same URIs with rewritten content are another shard (another commit)
    sid = shard_id([f"{u}\t{e or ''}" for u, e, _ in batch], shard_size)
    return Shard(sid, index, uris, options if any(options) else None)
