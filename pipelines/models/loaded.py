"""Resolve, inspect and load a model in one call: what every task-specific model class starts with."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import Backend, create_backend
from .model_dir import ModelSpec, load_model_spec
from .source import resolve_model_dir


@dataclass
class LoadedModel:
    """A model directory's spec, the name results report, and its loaded backend."""

    spec: ModelSpec
    model_name: str
    backend: Backend


def open_model(
    model_name: str | None = None,
    model_dir: str | None = None,
    device: str = "cpu",
    backend: str = "auto",
    cpu_threads: int | None = None,
) -> LoadedModel:
    """``model_dir`` wins over ``model_name`` (as in PaddleX); the reported name prefers ``model_name``."""
    spec = load_model_spec(resolve_model_dir(model_name, model_dir))
    return LoadedModel(
        spec=spec,
        model_name=model_name or spec.model_name,
        backend=create_backend(spec, backend=backend, device=device, threads=cpu_threads),
    )
