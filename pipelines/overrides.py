"""One way to apply call-time choices (CLI flags, flow parameters, serve options) to a pipeline config.

Precedence is overrides > YAML > defaults. ``predict``, ``annotate``, ``index`` and ``serve``
all call :func:`apply_overrides`, so ``--model-dir`` means the same thing everywhere: the
pipeline's own primary model (``Pipeline.model_dir_target``), never "whichever section
comes first" (for PP-ShiTuV2 that was the detector). Anything else is addressed by path:
``SubModules.Recognition.model_dir=/models/rec``.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import yaml

from .settings import PxflowSettings


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``"SubModules.Detection.batch_size=4"`` -> ``(["SubModules", "Detection", "batch_size"], 4)`` (YAML value)."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise ValueError(f"expected KEY.PATH=VALUE, got {text!r}")
    return [p for p in path.strip().split(".") if p], yaml.safe_load(value)


def apply_overrides(
    config: dict[str, Any],
    *,
    model_dir: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    index: str | None = None,
    settings: Mapping[str, Any] | None = None,
    assignments: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` with the given overrides applied (None means "not given").

    ``model_dir`` / ``batch_size`` go to the pipeline's primary model section for these
    ``predict`` ``options``; ``settings`` are ``Pxflow`` fields (validated);
    ``assignments`` are ``KEY.PATH=VALUE`` strings applied last.
    """
    from .registry import pipeline_class

    out = copy.deepcopy(config)
    if model_dir is not None or batch_size is not None:
        target = pipeline_class(out["pipeline_name"]).model_dir_target(out, options)
        section = out.setdefault("SubModules", {}).setdefault(target, {})
        if model_dir is not None:
            section["model_dir"] = str(model_dir)
        if batch_size is not None:
            if int(batch_size) < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            section["batch_size"] = int(batch_size)
    if device is not None:
        out["device"] = device
    if index is not None:
        out["index"] = index
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    if given:
        merged = {**(out.get("Pxflow") or {}), **given}
        out["Pxflow"] = PxflowSettings.from_mapping(merged).as_dict()
    for text in assignments:
        path, value = parse_assignment(text)
        node = out
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ValueError(f"{text!r}: {key} is not a section")
            node = child
        node[path[-1]] = value
    if assignments:
        PxflowSettings.from_mapping(out.get("Pxflow"))  # a bad Pxflow.* assignment fails here, named
    return out
