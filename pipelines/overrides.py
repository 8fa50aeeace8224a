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


def check_assignment_path(config: Mapping[str, Any], path: Sequence[str], text: str) -> None:
    """Refuse a ``KEY.PATH`` that names no key of this pipeline's config, naming the nearest valid key.

    A typo (``SubModules.ObjectDetecton.threshold``) would otherwise create a section nothing reads:
    the run goes on with a new run key and the setting silently unapplied. Valid keys are those of
    the config itself and of the pipeline's built-in YAML (which lists every key PaddleX documents,
    null ones included), so a user YAML that omits a key can still have it set. ``Pxflow.*`` paths
    are checked by :class:`PxflowSettings` (typed fields) instead.
    """
    import difflib

    from .config import builtin_config_names, read_builtin

    if not path or path[0] == "Pxflow":
        return
    name = config.get("pipeline_name")
    nodes: list[Any] = [config, read_builtin(name) if name in builtin_config_names() else {}]
    for depth, key in enumerate(path):
        maps = [n for n in nodes if isinstance(n, Mapping)]
        known = sorted({str(k) for n in maps for k in n})
        if not maps or key not in known:
            where = ".".join(path[:depth]) or "the top level"
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {'.'.join([*path[:depth], near[0]])!r}?" if near else ""
            raise ValueError(f"--set {text!r}: {name} has no key {key!r} at {where}{hint} (keys there: {', '.join(known) or 'none'})")
        nodes = [n.get(key) for n in maps]


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
        check_assignment_path(out, path, text)
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
