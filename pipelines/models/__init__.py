"""Model directories, the official-model cache and inference backends (task-agnostic)."""

from .backends import Backend, create_backend
from .model_dir import ModelSpec, load_model_spec
from .source import resolve_model_dir

__all__ = ["Backend", "ModelSpec", "create_backend", "load_model_spec", "resolve_model_dir"]
