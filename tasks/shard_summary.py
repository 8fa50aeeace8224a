"""What one shard did: :class:`ShardSummary`, the value an ``annotate-shard`` task returns.

Typed, so the flow's shard loop, the deployment fan-out (which rebuilds summaries from the tables)
and the run summary agree on the fields instead of on dict keys; picklable for Dask and Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from .rows import summarize


@dataclass(frozen=True)
class ShardSummary:
    """Counts of one shard's rows (none when ``skipped``: committed by an earlier run) and where it ran."""

    shard_id: str
    #: the shard's commit was already in the tables: nothing inferred or written now
    skipped: bool = False
    #: its position in the run's plan (the order shards were cut in)
    shard_index: int = 0
    n_inputs: int = 0
    n_ok: int = 0
    n_error: int = 0
    n_retryable: int = 0
    n_objects: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    #: table versions its commit produced, wall seconds, the wall-clock window of the work
    versions: dict[str, int] | None = None
    seconds: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: the process that ran it and how many model loads that process had made (reuse across shards)
    pid: int | None = None
    model_loads: int | None = None

    @classmethod
    def of_rows(cls, shard_id: str, images: Sequence[dict[str, Any]], **extra: Any) -> "ShardSummary":
        """A summary of ``images`` rows (:func:`pxflow.tasks.rows.summarize`) plus ``extra`` fields."""
        return cls(shard_id=shard_id, **summarize(images), **extra)

    def at(self, shard_index: int) -> "ShardSummary":
        return dataclasses.replace(self, shard_index=shard_index)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
