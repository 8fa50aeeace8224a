"""Model directories, the official-model cache and inference backends (task-agnostic)."""

from .backends import Backend, create_backend
from .loaded import LoadedModel, open_model, reported_model_name
from .model_dir import ModelSpec, load_model_spec
from .source import resolve_model_dir

__all__ = ["Backend", "LoadedModel", "ModelSpec", "create_backend", "load_model_spec", "open_model", "reported_model_name", "resolve_model_dir"]
