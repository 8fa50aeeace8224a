"""What every predictor shares: how it is built from a config section and how it names its model.

A predictor is one model type run the PaddleX way (PaddleX's ``models/<task>/predictor.py``):
load, preprocess (any thread), infer (a batch), postprocess. Pipelines only compose
predictors. :meth:`Predictor.identity` names the model's files *without loading a backend*,
so annotation keys can be computed before any worker starts and without touching the
models a run will not use.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from ..models import load_model_spec, reported_model_name, resolve_model_dir
from ..settings import PxflowSettings


@dataclass(frozen=True)
class ModelIdentity:
    """One model a pipeline uses: its config role (``SubModules`` key), name and file checksum."""

    role: str
    name: str
    sha256: str


@dataclass(frozen=True)
class PipelineIdentity:
    """Every model of a pipeline run, in config order (chained detectors included), and the data
    besides the models that decides its answers (PP-ShiTu's index). Checksums, never paths."""

    models: tuple[ModelIdentity, ...]
    data: tuple[ModelIdentity, ...] = ()

    @property
    def model_name(self) -> str:
        """One name for rows: the single model's, or the names joined with ``+``."""
        return "+".join(m.name for m in self.models)

    @property
    def model_sha256(self) -> str:
        """The single model's checksum, or a hash over every ``role=sha`` in order."""
        if len(self.models) == 1:
            return self.models[0].sha256
        return hashlib.sha256("\n".join(f"{m.role}={m.sha256}" for m in self.models).encode()).hexdigest()

    def __add__(self, other: "PipelineIdentity") -> "PipelineIdentity":
        return PipelineIdentity(self.models + other.models, self.data + other.data)

    def checksums(self) -> dict[str, str]:
        """``role -> sha256`` of everything above, what an annotation key hashes."""
        return {m.role: m.sha256 for m in (*self.models, *self.data)}


def model_source(sub: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(model_name, model_dir)`` of a ``SubModules.<X>`` section; raises when it names neither."""
    name, directory = sub.get("model_name"), sub.get("model_dir")
    if not (name or directory):
        raise ValueError("a SubModules section needs model_name or model_dir")
    return (str(name) if name else None), (str(directory) if directory else None)


class Predictor(ABC):
    """Subclasses set :attr:`module_names` and implement :meth:`from_submodule` and :meth:`infer`.

    The contract pipelines rely on: ``preprocess`` one input (any thread), then :meth:`infer`
    a batch of preprocessed inputs, one call per batch, whatever the model type. One name
    for that call means a pipeline (or a plug-in's) composes any predictor the same way, and
    a predictor that forgets it fails when instantiated, not when a pipeline calls a name it
    lacks. What follows ``infer`` (thresholds, masks onto the frame) is the predictor's own.
    """

    #: PaddleX ``module_name`` values this predictor serves (the registry key)
    module_names: tuple[str, ...] = ()

    @classmethod
    @abstractmethod
    def from_submodule(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> "Predictor":
        """Build from a PaddleX ``SubModules.<X>`` section and the ``Pxflow`` settings."""

    @abstractmethod
    def infer(self, batch: Sequence[Any]) -> Sequence[Any]:
        """The model's raw answer for each element of ``batch``, in order (``len(out) == len(batch)``).

        ``batch`` holds what ``preprocess`` made (SAM: ``(sample, prompts)`` pairs, as its prompts
        are per image); the predictor splits it to the model's and the graph's batch limits.
        """

    @classmethod
    def check(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> None:
        """Refuse, when the pipeline is created, a model this predictor could never drive.

        For predictors whose models load lazily (SAM: one of two models is used per run):
        cheap checks only, loading no weights; ``ModelDirError`` naming the directory. Models
        that load at creation are checked by loading them, so the default checks nothing.
        """

    @classmethod
    def identity(cls, sub: Mapping[str, Any], role: str) -> ModelIdentity:
        """Name and checksum of the model files this section points at (no backend is loaded).

        Named as the loaded model reports itself (:func:`reported_model_name`): a run key and
        the rows it writes never disagree on the name.
        """
        name, directory = model_source(sub)
        spec = load_model_spec(resolve_model_dir(name, directory))
        return ModelIdentity(role, reported_model_name(spec.model_name, name, directory), spec.sha256())


P = TypeVar("P", bound=Predictor)


class LazyPredictor(Generic[P]):
    """Builds a predictor on first use: a run that never needs it never loads it (SAM-H is 2.5 GB)."""

    def __init__(self, factory: Callable[[], P]) -> None:
        self._factory = factory
        self._predictor: P | None = None
        self._lock = threading.Lock()

    def get(self) -> P:
        if self._predictor is None:
            with self._lock:
                if self._predictor is None:
                    self._predictor = self._factory()
        return self._predictor


def submodule(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``config["SubModules"][name]`` or a clear error naming the missing section."""
    sub = (config.get("SubModules") or {}).get(name)
    if not sub:
        raise ValueError(f"config has no SubModules.{name} section")
    return dict(sub)


def submodule_names(config: Mapping[str, Any]) -> Sequence[str]:
    return list((config.get("SubModules") or {}))
