"""What a pipeline package says about itself: :class:`PipelineSpec`, read without loading any model.

PaddleX keeps a pipeline's name, its default config and its predictors in registries the
pipeline package fills; pxflow does the same with one object per pipeline, so the rest of
pxflow (``create_pipeline``, the CLIs, the batch rows, the server) asks the spec instead of
comparing pipeline names. Each pipeline package exposes ``SPEC`` (in ``<package>/spec.py``);
a plug-in registers its own with :func:`pxflow.pipelines.registry.register_pipeline`.

Targets are ``"package.module:attr"`` strings (or the objects themselves) so that reading a
spec imports nothing heavy: the pipeline class, its result class, its options model and its
serving handlers load on first use (:func:`resolve`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


def resolve(target: Any) -> Any:
    """``"package.module:attr"`` -> the attribute (anything else is returned as it is)."""
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        if not attr:
            raise ValueError(f"expected 'package.module:attr', got {target!r}")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return target


@dataclass(frozen=True)
class Endpoint:
    """One serving route of a pipeline: its path and the handler that answers it.

    ``handler`` (``"package.module:function"``) is called by ``pxflow serve`` with the
    server's shared context and the request's JSON body and returns the ``result`` part of
    PaddleX's envelope; the envelope, limits, admission, metrics and batching stay in the
    server (see :mod:`pxflow.pipelines.serving` for the context a handler receives).
    """

    path: str
    handler: Any


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline, described: everything pxflow needs to know about it before any model loads."""

    #: ``pipeline_name`` as configs and the CLI spell it
    name: str
    #: the :class:`~pxflow.pipelines.base.BasePipeline` subclass (``"package.module:Class"``)
    pipeline: Any
    #: its default config: a YAML path, or ``"package.module:CONSTANT"`` naming one
    config: Any
    #: the pydantic model of the keyword options its ``predict()`` takes besides the inputs
    #: (``threshold``, ``prompt_type`` ...); the CLIs generate their pipeline flags from it; None: none
    options: Any = None
    #: its PaddleX serving routes; empty: ``pxflow serve`` refuses the pipeline, naming why
    endpoints: tuple[Endpoint, ...] = ()
    #: whether it searches an index (``create_pipeline(index=...)``, ``--index``)
    takes_index: bool = False
    description: str = ""

    def pipeline_class(self) -> Any:
        return resolve(self.pipeline)

    def result_class(self) -> Any:
        """The result class ``predict()`` yields (it owns the table records and their schema fragment)."""
        return self.pipeline_class().result_class

    def options_model(self) -> Any:
        return resolve(self.options) if self.options is not None else None

    def config_path(self) -> str:
        path = self.config
        if isinstance(path, str) and ":" in path and not path.startswith("/") and "/" not in path.partition(":")[0]:
            path = resolve(path)
        return str(path)
