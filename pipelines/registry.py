"""Pipeline names -> implementing classes, imported lazily so that each pipeline's deps load on use."""

from __future__ import annotations

import importlib
from typing import Any

from .config import load_config

#: pipeline_name -> "module:Class"
PIPELINES: dict[str, str] = {
    "object_detection": "pxflow.pipelines.object_detection.pipeline:ObjectDetectionPipeline",
    "small_object_detection": "pxflow.pipelines.small_object_detection.pipeline:SmallObjectDetectionPipeline",
    "instance_segmentation": "pxflow.pipelines.instance_segmentation.pipeline:InstanceSegmentationPipeline",
    "open_vocabulary_segmentation": "pxflow.pipelines.open_vocabulary_segmentation.pipeline:OpenVocabularySegmentationPipeline",
    "PP-ShiTuV2": "pipelines.pp_shitu_v2.pipeline:ShiTuV2Pipeline",
}


def pipeline_class(name: str):
    try:
        target = PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline_name {name!r}; available: {sorted(PIPELINES)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_pipeline(
    pipeline: str | None = None,
    config: dict[str, Any] | None = None,
    device: str | None = None,
    **overrides: Any,
):
    """PaddleX's ``create_pipeline``: a pipeline name or YAML path, and/or a config dict.

    Extra keyword arguments override the ``Pxflow`` section (``backend``,
    ``cpu_threads``, ``load_workers``, ``prefetch`` ...).
    """
    merged = load_config(pipeline, config)
    if overrides:
        merged["Pxflow"].update({k: v for k, v in overrides.items() if v is not None})
    cls = pipeline_class(merged["pipeline_name"])
    return cls(merged, device=device)
