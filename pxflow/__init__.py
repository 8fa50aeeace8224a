"""pxflow: PaddleX's computer-vision pipelines as Prefect 3 batch workflows.

Everything installs under this one name (``pxflow.pipelines``, ``pxflow.tasks``,
``pxflow.flows``, ``pxflow.configs``) so that a user's own ``tasks/`` or
``flows/`` package never collides with ours. The repository keeps those four
as top-level folders; ``setup.py`` maps them under ``pxflow``.

>>> from pxflow import create_pipeline
>>> pipe = create_pipeline(pipeline="object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": "..."}}})
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("pxflow")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout without an install
    __version__ = "0+unknown"


def create_pipeline(*args: Any, **kwargs: Any):
    """PaddleX's ``create_pipeline`` (see :func:`pxflow.pipelines.create_pipeline`); imported lazily so
    ``import pxflow`` stays cheap (no Paddle, no ONNX Runtime)."""
    from pxflow.pipelines import create_pipeline as _create

    return _create(*args, **kwargs)


__all__ = ["__version__", "create_pipeline"]
