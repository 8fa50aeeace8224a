"""What every shard of one annotate run shares, resolved once before any shard starts.

:func:`prepare_job` turns the flow's options into an :class:`AnnotateJob`: the pipeline
config with overrides applied (:func:`pxflow.pipelines.overrides.apply_overrides`), the
identity of every model it will use (``Pipeline.identity``: nothing is loaded) and the run
key. The job is small and picklable (Dask and Ray ship it) and holds no secret: S3
settings travel as a Prefect block *name*, resolved in the worker (:mod:`.credentials`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pxflow.pipelines.config import load_config
from pxflow.pipelines.overrides import apply_overrides
from pxflow.pipelines.registry import pipeline_class
from pxflow.pipelines.settings import PxflowSettings

from .credentials import storage_for
from .shards import run_key

if TYPE_CHECKING:  # the index versions module loads faiss: imported where an index is used
    from pxflow.pipelines.retrieval.versions import PinLease

#: loader threads per shard: downloads are latency-bound, so more than the cores
DEFAULT_DOWNLOAD_WORKERS = 8
#: how often this process prepared a job (a run prepares it once: the tests count)
CALLS: Counter = Counter()


@dataclass(frozen=True)
class AnnotateJob:
    """Everything a shard task needs besides its URIs."""

    config: dict[str, Any]
    predict_kwargs: dict[str, Any]
    run_key: str
    pipeline: str
    model_name: str
    model_sha256: str
    output: str
    partition: str | None = None
    force: bool = False
    s3_block: str | None = None  # a Prefect Secret block name; its value never leaves the worker
    #: ``--replace``: shards commit here, then one commit swaps the partition into ``output``
    staging: str | None = None
    #: the ``annotate`` flow run the rows belong to (set by the flow)
    flow_run_id: str | None = None
    #: where the models run: ``cpu`` or ``gpu:N`` (also ``config["device"]``); not part of the run key
    device: str = "cpu"

    def on_device(self, device: str) -> "AnnotateJob":
        """This job on another device (a worker pinned to one GPU sees it as ``gpu:0``)."""
        from dataclasses import replace

        return replace(self, device=device, config={**self.config, "device": device})

    @property
    def index_spec(self) -> Any:
        """The index the pipeline reads (pinned by :func:`prepare_job`), or None."""
        spec = self.predict_kwargs.get("index")
        return spec if spec is not None else self.config.get("index")

    @property
    def table_root(self) -> str:
        """Where shard commits go: the output tables, or the run's staging tables."""
        return self.staging or self.output


def prepare_job(
    output: str,
    pipeline: str = "object_detection",
    model_dir: str | None = None,
    threshold: Any = None,
    backend: str | None = None,
    predict_kwargs: dict[str, Any] | None = None,
    partition: str | None = None,
    force: bool = False,
    download_workers: int = DEFAULT_DOWNLOAD_WORKERS,
    cpu_threads: int | None = None,
    s3_block: str | None = None,
    assignments: tuple[str, ...] = (),
    device: str | None = None,
) -> AnnotateJob:
    """Config (YAML < parameters), model identity and run key: everything shards share.

    Raises ``ValueError`` for a bad pipeline, option or model before any work is fanned out.
    ``device`` (``cpu``, ``gpu``, ``gpu:N``; default: the config's, else ``cpu``) is where the
    models run; it is left out of the run key, so moving a job to a GPU keeps its rows.
    """
    from pxflow.pipelines.models.backends import normalize_device

    CALLS["prepare_job"] += 1
    kwargs = dict(predict_kwargs or {})
    if threshold is not None:
        kwargs["threshold"] = threshold
    base = load_config(pipeline)
    workers = max(1, int(download_workers))
    settings = {
        "backend": backend,
        "cpu_threads": cpu_threads,
        "load_workers": workers,
        "prefetch": max(int((base.get("Pxflow") or {}).get("prefetch") or PxflowSettings.prefetch), 2 * workers),
    }
    config = apply_overrides(base, model_dir=model_dir, settings=settings, assignments=assignments, options=kwargs)
    # a versioned index (root/name) is pinned now, once: every shard reads that version, whatever is published meanwhile
    if kwargs.get("index") is not None or config.get("index") not in (None, "", "None", "null"):
        from pxflow.pipelines.retrieval.versions import pin_spec
    if kwargs.get("index") is not None:
        kwargs["index"] = pin_spec(kwargs["index"], storage_for(s3_block))
    elif config.get("index") not in (None, "", "None", "null"):
        config["index"] = pin_spec(config["index"], storage_for(s3_block))
    chosen = normalize_device(device if device is not None else config.get("device"))
    config["device"] = chosen
    keyed = {k: v for k, v in config.items() if k != "device"}
    identity = pipeline_class(config["pipeline_name"]).identity(config, kwargs)
    if not identity.models:
        raise ValueError("the pipeline config names no model (SubModules.*.model_name/model_dir)")
    return AnnotateJob(
        config=config,
        predict_kwargs=kwargs,
        run_key=run_key(keyed, identity, kwargs),
        pipeline=str(config["pipeline_name"]),
        model_name=identity.model_name,
        model_sha256=identity.model_sha256,
        output=output,
        partition=partition,
        force=force,
        s3_block=s3_block,
        device=chosen,
    )


def lease_index(job: AnnotateJob, holder: str | None = None) -> PinLease | None:
    """A pin lease on the index version ``job`` reads, for the run to hold until it ends (gc keeps
    that version meanwhile; the lease lapses by itself if the run dies); None without a versioned index.

    Raises :class:`~pxflow.pipelines.retrieval.versions.VersionCollected` when gc collected the version
    after :func:`prepare_job` pinned it (CURRENT moved on meanwhile): prepare the job again.
    """
    if job.index_spec is None:
        return None
    from pxflow.pipelines.retrieval.versions import hold_pin

    return hold_pin(job.index_spec, storage_for(job.s3_block), holder=holder)[1]
