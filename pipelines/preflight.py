"""Check a run once, before it fans out: the batch flows call :func:`preflight` before any shard runs.

Creating the pipeline loads its models (a garbage ``inference.onnx``, an invalid
``inference.yml`` or a directory without a graph is a
:class:`pxflow.pipelines.models.model_dir.ModelDirError`, a ``ValueError`` naming
the file), and ``validate_kwargs`` checks the ``predict()`` options (prompts,
thresholds, the retrieval index ...) and loads what they select (SAM's model for
the prompt type), so a mistake fails here, once, instead of in every shard.
"""

from __future__ import annotations

from typing import Any, Mapping

from .base import BasePipeline
from .registry import pipeline_class


def preflight(config: Mapping[str, Any], options: Mapping[str, Any] | None = None, device: str | None = None) -> BasePipeline:
    """Create ``config``'s pipeline on ``device`` and validate ``options`` as ``predict(**options)`` would.

    Raises ``ValueError`` (bad config, model, prompt, threshold, index) or ``TypeError``
    (an option the pipeline does not take); returns the created pipeline so the caller
    may reuse it. Nothing is read from the inputs.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping (a parsed pipeline YAML), got {type(config).__name__}")
    name = config.get("pipeline_name")
    if not name:
        raise ValueError("config has no pipeline_name")
    options = dict(options or {})
    for reserved in ("input", "on_error", "storage"):
        if reserved in options:
            raise TypeError(f"{reserved!r} is an argument of predict() itself, not a predict option")
    pipeline = pipeline_class(str(name))(dict(config), device=device)
    pipeline.check_predict_options(**options)
    return pipeline
