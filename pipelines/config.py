"""Pipeline configuration: PaddleX-format YAML, overridden by a dict, then by call arguments.

Precedence: ``create_pipeline`` / CLI arguments > ``config=`` dict > YAML file >
built-in defaults. pxflow-only settings live under the top-level ``Pxflow:``
section so PaddleX can still read our YAMLs.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from typing import Any

import yaml

PXFLOW_DEFAULTS: dict[str, Any] = {
    "backend": "auto",  # auto | paddle | onnxruntime
    "cpu_threads": None,  # None: every core this process may use
    "load_workers": 2,  # threads that read + decode + preprocess ahead of inference
    "prefetch": 8,  # loaded images allowed to wait for the model
    "infer_workers": 1,  # batches inferred at once (each with cpu_threads // infer_workers threads)
}


def builtin_config_names() -> list[str]:
    """Pipeline names that ship a YAML in ``configs/``."""
    return sorted(
        p.name[: -len(".yaml")] for p in resources.files("pxflow.configs").iterdir() if p.name.endswith(".yaml")
    )


def builtin_config_path(name: str) -> str:
    path = resources.files("pxflow.configs") / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown pipeline {name!r}; built-in pipelines: {builtin_config_names()}")
    return str(path)


def load_config(pipeline: str | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve a pipeline name or YAML path and an optional dict into one config dict."""
    base: dict[str, Any] = {}
    if pipeline:
        path = pipeline if (pipeline.endswith((".yaml", ".yml")) or os.path.isfile(pipeline)) else builtin_config_path(pipeline)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"pipeline config not found: {path}")
        with open(path, encoding="utf-8") as f:
            base = yaml.safe_load(f) or {}
    elif config is None:
        raise ValueError("create_pipeline needs a pipeline name, a YAML path or a config dict")
    merged = deep_merge(base, config or {})
    if "pipeline_name" not in merged:
        raise ValueError("pipeline config has no pipeline_name")
    merged["Pxflow"] = deep_merge(PXFLOW_DEFAULTS, merged.get("Pxflow") or {})
    return merged


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dump_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
