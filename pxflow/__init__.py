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

def _checkout_path() -> list[str]:
    """The repository root when this file is the checkout's ``pxflow/`` (not an installed copy).

    Installed, ``pxflow.flows`` etc. live in this folder (setup.py maps them there). In a checkout
    they are the top-level folders beside it; when the checkout's root is on ``sys.path`` (the
    working directory of ``prefect deploy``, ``python -m``, pytest) this ``pxflow/`` is found
    first and shadows the installed package, so its ``__path__`` must reach them too, or
    ``import pxflow.flows`` fails depending on where the command ran (pkgutil-style extension).
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    mapped = ("pipelines", "tasks", "flows", "configs")
    if os.path.isfile(os.path.join(root, "setup.py")) and not os.path.isdir(os.path.join(here, "flows")) and all(
        os.path.isfile(os.path.join(root, name, "__init__.py")) for name in mapped
    ):
        return [root]
    return []


__path__ = [*__path__, *_checkout_path()]  # noqa: F821 - a package's __path__

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
