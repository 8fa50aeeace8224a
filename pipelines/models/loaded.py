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


def reported_model_name(own_name: str, model_name: str | None, model_dir: str | None) -> str:
    """The name results, rows and index lineage record for a model.

    A given ``model_dir`` is what runs, so it names itself (``own_name``: its ``inference.yml``'s
    ``Global.model_name``, else its folder name, :attr:`ModelSpec.model_name`): a pipeline YAML keeps its default
    ``model_name`` (``PP-ShiTuV2_rec``) when only ``model_dir`` is overridden, and that
    default would then describe weights that never ran. Without a directory the name
    is the one asked for (the official model of that name was resolved).
    """
    return own_name if model_dir else str(model_name or own_name)


def open_model(
    model_name: str | None = None,
    model_dir: str | None = None,
    device: str = "cpu",
    backend: str = "auto",
    cpu_threads: int | None = None,
) -> LoadedModel:
    """``model_dir`` wins over ``model_name`` (as in PaddleX), for the files and the reported name alike."""
    spec = load_model_spec(resolve_model_dir(model_name, model_dir))
    return LoadedModel(
        spec=spec,
        model_name=reported_model_name(spec.model_name, model_name, model_dir),
        backend=create_backend(spec, backend=backend, device=device, threads=cpu_threads),
    )
