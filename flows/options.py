"""The options flows share, each set as one typed parameter: :class:`AnnotateOptions`
(``annotate``, ``backfill``) and :class:`FeatureOptions` (the index flows that embed a gallery).

Prefect builds a flow's parameter schema from its signature, so a pydantic model here
gives the UI and deployments one documented, validated object instead of the same
parameters repeated in every flow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pxflow.pipelines.models.backends import normalize_device
from pxflow.tasks.job import DEFAULT_DOWNLOAD_WORKERS
from pxflow.tasks.shards import DEFAULT_SHARD_SIZE

from .runners import get_runner, runner_names


class AnnotateOptions(BaseModel):
    """How to annotate: which pipeline and model, which options, how to fan out."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field("object_detection", description="pipeline name (object_detection ...) or a pipeline YAML path")
    model_dir: str | None = Field(None, description="the pipeline's primary model directory (local or s3://)")
    threshold: float | dict[int, float] | None = Field(None, description="score threshold: a float or {cls_id: float}")
    backend: str | None = Field(None, description="inference backend: auto, paddle or onnxruntime")
    predict_kwargs: dict[str, Any] | None = Field(
        None, description="the pipeline's predict() options (its spec's options model: prompt_type, prompt, index, ...; "
                          "the CLI's pipeline flags), checked against that model before any shard runs"
    )
    set: list[str] = Field(default_factory=list, description="config overrides KEY.PATH=VALUE, e.g. SubModules.Detection.model_dir=/m")
    shard_size: int = Field(DEFAULT_SHARD_SIZE, ge=1, description="images per shard")
    concurrency: int = Field(2, ge=1, description="shards processed at once (threads or worker processes)")
    runner: str = Field("thread", description="task runner: " + ", ".join(runner_names()))
    dask_address: str | None = Field(None, description="an existing Dask scheduler (runner dask)")
    ray_address: str | None = Field(None, description="an existing Ray cluster, e.g. ray://head:10001 (runner ray)")
    device: str = Field("cpu", description="where the models run: cpu, gpu (any one GPU) or gpu:N")
    deployment: str = Field(
        "annotate-shard-group/gpu",
        description="runner deployment: the `flow/deployment` that annotates one group of shards (e.g. on a GPU pool)",
    )
    shards_per_group: int = Field(4, ge=1, description="runner deployment: shards per child flow run")
    limit: int | None = Field(None, ge=1, description="annotate at most this many listed inputs (a trial run)")
    force: bool = Field(False, description="re-annotate every input, even unchanged ones (shard by shard)")
    replace: bool = Field(False, description="re-annotate the whole partition and swap it in atomically")
    prune: bool = Field(False, description="drop the rows of inputs that are no longer listed")
    allow_empty: bool = Field(False, description="an input that lists nothing is a successful (empty) run")
    download_workers: int = Field(DEFAULT_DOWNLOAD_WORKERS, ge=1, description="download/decode threads per shard")
    s3_block: str | None = Field(None, description="name of a Prefect Secret block with S3 settings (JSON)")
    max_error_rate: float = Field(
        1.0, ge=0.0, le=1.0,
        description="error budget: the run fails when more than this share of the inputs it inferred failed, "
                    "or when every one failed (the default 1.0 fails only the latter)",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return normalize_device(value)

    @field_validator("prune")
    @classmethod
    def _prune_without_limit(cls, value: bool, info: ValidationInfo) -> bool:
        # a field validator (not a model one) so the error names the field, and the CLI its flag
        if value and info.data.get("limit") is not None:
            raise ValueError("prune does not mix with limit: a limited run does not list every input")
        return value

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        return get_runner(value).name  # raises, naming the choices, for an unknown one


class FeatureOptions(BaseModel):
    """How the index flows embed a gallery: the recognition model, and how feature shards fan out."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field("PP-ShiTuV2", description="pipeline name or YAML whose SubModules.Recognition makes the features")
    rec_model_dir: str | None = Field(None, description="recognition model directory (overrides the pipeline's)")
    backend: str | None = Field(None, description="inference backend: auto, paddle or onnxruntime")
    device: str = Field("cpu", description="where the model runs: cpu, gpu (any one GPU) or gpu:N")
    gallery_root: str | None = Field(None, description="folder the label file's paths are relative to (default: its own)")
    runner: str = Field("thread", description="task runner of the feature shards: " + ", ".join(runner_names()))
    concurrency: int = Field(2, ge=1, description="feature shards at once")
    shard_size: int = Field(64, ge=1, description="gallery images per feature shard")
    features_root: str | None = Field(None, description="lake holding the features table (default <root>/_lake)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return normalize_device(value)

    @field_validator("runner")
    @classmethod
    def _task_runner(cls, value: str) -> str:
        if not get_runner(value).runs_tasks:
            raise ValueError(f"runner {value!r} does not run tasks in a flow; feature shards need one that does")
        return value

    def model_spec(self) -> dict[str, Any]:
        """What :func:`pxflow.tasks.features.feature_model` loads (the part a worker needs)."""
        return {"pipeline": self.pipeline, "rec_model_dir": self.rec_model_dir, "backend": self.backend, "device": self.device}
