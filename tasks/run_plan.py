"""One run plan: what an annotate run resolved before any work, computed once and handed on.

A run used to resolve the same things two or three times: the CLI's preflight prepared the job
(config, model checksums, run key), checked the tables and opened the models, then the flow did
all of it again, and the shard loop, the deployment fan-out and ``--dry-run`` each set up the
incremental plan their own way. :class:`RunPlan` is that resolution as one frozen value: the
CLI computes it (``flows.annotate_run.make_plan``) and passes it to the flow as a parameter, which
uses it instead of recomputing when it was made for the same options (``basis``). A deployment's
child runs get its job (a dict of plain values), and :func:`plan_shards` is the one place where
a listing becomes shards.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, replace
from typing import Any, Iterator

from pxflow.pipelines.io.manifest import iter_entries
from pxflow.pipelines.io.storage import Storage

from .credentials import storage_for
from .job import AnnotateJob
from .lake import Lake
from .plan import PlanStats, plan
from .shards import Shard, canonical_json


@dataclass(frozen=True)
class RunPlan:
    """The run's job (config, model identity and checksum, run key, output, partition) and what was checked.

    A plain frozen dataclass of JSON-able values: Prefect records it as a flow parameter, a
    deployment can be given one, and Dask/Ray pickle its job.
    """

    job: AnnotateJob
    #: digest of what the plan was computed from (:func:`plan_basis`): a flow given a plan for
    #: other options or another output recomputes instead of trusting it
    basis: str
    #: the partitioning fits the output tables (not checked where a Prefect block must be read first)
    tables_checked: bool = False
    #: the models opened and the predict options validated on this machine
    models_checked: bool = False

    @property
    def storage(self) -> Storage:
        """Where inputs and tables are read: the environment's, or the job's S3 block's (resolved here)."""
        return storage_for(self.job.s3_block)

    def for_partition(self, partition: str | None) -> "RunPlan":
        """This plan for one partition of a backfill (the run key does not depend on it)."""
        return replace(self, job=replace(self.job, partition=partition))


def plan_basis(output: str, settings: dict[str, Any]) -> str:
    """A digest of the output and the option values a plan depends on."""
    return hashlib.sha256(canonical_json({"output": output, **settings}).encode()).hexdigest()[:16]


def plan_shards(
    job: AnnotateJob, input: str, storage: Storage, shard_size: int, limit: int | None = None,
    everything: bool = False,
) -> tuple[PlanStats, Iterator[Shard]]:
    """The run's incremental plan: its (filling) :class:`PlanStats` and the shards as the listing streams.

    ``everything`` (force, replace): every listed input, whatever the tables hold; else only the
    inputs without a row for the job's run key and partition, changed or retryable.
    """
    annotated = {} if everything else Lake(job.output, storage).annotated(job.run_key, job.partition)
    stats = PlanStats()
    entries = iter_entries(input, storage)
    if limit is not None:
        entries = itertools.islice(entries, limit)
    return stats, plan(entries, annotated, shard_size, storage, stats, everything)
