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

from .settings import PxflowSettings

#: the ``Pxflow:`` keys every loaded config carries, at :class:`~pxflow.pipelines.settings.PxflowSettings`' defaults
#: (the settings' one place); only these five, since run keys hash the config
PXFLOW_DEFAULTS: dict[str, Any] = {name: getattr(PxflowSettings, name)
                                   for name in ("backend", "cpu_threads", "load_workers", "prefetch", "infer_workers")}


def packaged_config(filename: str) -> str:
    """The path of a YAML shipped in ``pxflow.configs`` (what the built-in specs name as their config)."""
    return str(resources.files("pxflow.configs") / filename)


def builtin_config_names() -> list[str]:
    """Pipeline names that have a default YAML: every registered spec with a ``config``, plug-ins included."""
    from .registry import pipeline_names, pipeline_spec

    return [name for name in pipeline_names() if pipeline_spec(name).config is not None]


def builtin_config_path(name: str) -> str:
    """The default YAML of pipeline ``name``: its spec's ``config`` (a plug-in pipeline ships its own).

    An unknown name, or a pipeline registered without a config (``register_pipeline(name, target)``),
    is a ``ValueError`` saying so.
    """
    from .registry import pipeline_spec

    spec = pipeline_spec(name)
    if spec.config is None:
        raise ValueError(
            f"pipeline {name!r} was registered without a default config: give its YAML path, "
            "or register a PipelineSpec with config=..."
        )
    path = spec.config_path()
    if not os.path.isfile(path):
        raise ValueError(f"pipeline {name!r}: its default config {path} does not exist")
    return path


def load_config(
    pipeline: str | None = None, config: "dict[str, Any] | str | os.PathLike | None" = None
) -> dict[str, Any]:
    """Resolve a pipeline name or YAML path and an optional dict (or a second YAML path) into one config dict.

    ``config`` may be a dict or the path of a YAML file (``create_pipeline(config="x.yaml")``).
    Either source may use PaddleX 3.0-beta's ``Global:`` + ``Pipeline:`` layout; it is
    converted to the ``SubModules`` layout first (:func:`from_paddlex_beta_layout`).
    """
    base: dict[str, Any] = {}
    if pipeline:
        path = pipeline if (pipeline.endswith((".yaml", ".yml")) or os.path.isfile(pipeline)) else builtin_config_path(pipeline)
        base = read_yaml_config(path)
    elif config is None:
        raise ValueError("create_pipeline needs a pipeline name, a YAML path or a config dict")
    if isinstance(config, (str, os.PathLike)):
        override = read_yaml_config(os.fspath(config))
    elif config is None or isinstance(config, dict):
        override = upgrade_layout(config or {})
    else:
        raise TypeError(f"config must be a dict or a YAML path, got {type(config).__name__}")
    merged = deep_merge(base, override)
    if "pipeline_name" not in merged:
        raise ValueError("pipeline config has no pipeline_name")
    if "Pipeline" in merged:
        merged = merge_pipeline_section(merged, source=_source_name(pipeline, config))
    merged["Pxflow"] = deep_merge(PXFLOW_DEFAULTS, merged.get("Pxflow") or {})
    return merged


def read_yaml_config(path: str) -> dict[str, Any]:
    """A pipeline YAML file as a dict, in the ``SubModules`` layout."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pipeline config not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a pipeline config must be a mapping, got {type(data).__name__}")
    return upgrade_layout(data, source=path)


# -- PaddleX 3.0-beta's layout -------------------------------------------------------------------

#: single-model pipelines: beta ``Pipeline:`` section -> the ``SubModules`` key it becomes
BETA_SINGLE_MODEL = {
    "object_detection": "ObjectDetection",
    "small_object_detection": "SmallObjectDetection",
    "instance_segmentation": "InstanceSegmentation",
}
#: beta keys PaddleX passed to its predictors, which pxflow has no use for (warned about)
BETA_PREDICTOR_KEYS = ("pp_option", "use_hpip", "hpi_params", "hpi_config")


def is_paddlex_beta_layout(config: dict[str, Any]) -> bool:
    """``Global: {pipeline_name, input}`` + ``Pipeline: {...}`` (PaddleX 3.0.0b1/b2), not our ``SubModules``."""
    return "pipeline_name" not in config and isinstance(config.get("Global"), dict) and "Pipeline" in config


def upgrade_layout(config: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """``config`` in the ``SubModules`` layout (converted when it uses PaddleX 3.0-beta's layout)."""
    return from_paddlex_beta_layout(config, source) if is_paddlex_beta_layout(config) else config


def _model_ref(model: Any) -> dict[str, Any]:
    """A beta ``model:`` value: a model name, or (like PaddleX's ``create_predictor``) a model directory."""
    text = str(model)
    is_path = os.path.isdir(os.path.expanduser(text)) or "/" in text or os.sep in text or text.startswith((".", "~"))
    if is_path or "://" in text:
        return {"model_name": None, "model_dir": text}
    return {"model_name": text, "model_dir": None}


def _source_name(pipeline: str | None, config: Any) -> str | None:
    """The YAML file a ``Pipeline:`` section most likely came from, for error messages."""
    if isinstance(config, (str, os.PathLike)):
        return os.fspath(config)
    return pipeline if pipeline and pipeline.endswith((".yaml", ".yml")) else None


def merge_pipeline_section(config: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Fold a ``Pipeline:`` section left in a ``SubModules`` config into that config.

    PaddleX's documents (§4.2) tell users to add ``Pipeline: {model: DIR, device: cpu,
    batch_size: 1}`` to the YAML that ``--get_pipeline_config`` hands out. Left alone it was
    ignored and the run then tried to download the default model, so the section is read
    as the 3.0-beta layout reads it (same keys, same ``model`` = name-or-directory rule) and
    merged over the file's own values; a pipeline without such a layout fails naming it.
    """
    where = f"{source}: " if source else ""
    section = config.get("Pipeline")
    if not isinstance(section, dict):
        raise ValueError(f"{where}the `Pipeline:` section must be a mapping (model, device, batch_size), got {section!r}")
    name = config["pipeline_name"]
    rest = {k: v for k, v in config.items() if k != "Pipeline"}
    if name not in BETA_SINGLE_MODEL and name != "PP-ShiTuV2":
        raise ValueError(
            f"{where}a `Pipeline:` section ({', '.join(sorted(section)) or 'empty'}) cannot be applied to pipeline "
            f"{name!r} (it applies to {sorted([*BETA_SINGLE_MODEL, 'PP-ShiTuV2'])}); "
            "set SubModules.<X>.model_dir / batch_size and the top-level device instead"
        )
    converted = from_paddlex_beta_layout({"Global": {"pipeline_name": name}, "Pipeline": section}, source, with_defaults=False)
    converted.pop("pipeline_name")
    return deep_merge(rest, converted)


def from_paddlex_beta_layout(config: dict[str, Any], source: str | None = None, with_defaults: bool = True) -> dict[str, Any]:
    """Convert PaddleX 3.0-beta's ``Global`` + ``Pipeline`` layout into our ``SubModules`` layout.

    - object_detection / small_object_detection / instance_segmentation:
      ``Pipeline: {model, batch_size, device}`` -> ``SubModules.<Module>: {model_name | model_dir,
      batch_size}`` (``model`` is a ``model_dir`` when it is a path, as in PaddleX) and top-level ``device``;
    - PP-ShiTuV2: ``{det_model, rec_model, det_batch_size, rec_batch_size, index, score_thres,
      return_k}`` -> ``SubModules.Detection`` / ``Recognition``, ``index``, ``rec_threshold``, ``rec_topk``.

    The built-in YAML of the pipeline supplies every key the beta layout lacks (``module_name``,
    thresholds, the ``Pxflow`` section). ``Global.input`` and the ``NOTE`` section are dropped;
    ``pp_option`` / ``use_hpip`` / ``hpi_params`` are dropped with a warning. Any other key is an
    error naming it. open_vocabulary_segmentation had no beta layout. ``with_defaults=False``
    leaves the built-in YAML out (:func:`merge_pipeline_section` merges into a full config).
    """
    where = f"{source}: " if source else ""
    name = config["Global"].get("pipeline_name")
    if not name:
        raise ValueError(f"{where}PaddleX config has a Global section without pipeline_name")
    setting = dict(config.get("Pipeline") or {})
    out: dict[str, Any] = {"pipeline_name": name}
    device = setting.pop("device", None)
    if device:
        out["device"] = str(device)
    dropped = [k for k in BETA_PREDICTOR_KEYS if setting.pop(k, None) not in (None, False)]
    if dropped:
        import warnings

        warnings.warn(f"{where}pxflow ignores Pipeline.{'/'.join(dropped)} (PaddleX predictor options)", UserWarning, stacklevel=3)
    if name in BETA_SINGLE_MODEL:
        sub: dict[str, Any] = {}
        if "model" in setting:
            sub.update(_model_ref(setting.pop("model")))
        if "batch_size" in setting:
            sub["batch_size"] = int(setting.pop("batch_size"))
        subs = {BETA_SINGLE_MODEL[name]: sub}
        accepted = ["model", "batch_size", "device"]
    elif name == "PP-ShiTuV2":
        det: dict[str, Any] = {}
        rec: dict[str, Any] = {}
        if "det_model" in setting:
            det.update(_model_ref(setting.pop("det_model")))
        if "rec_model" in setting:
            rec.update(_model_ref(setting.pop("rec_model")))
        if "det_batch_size" in setting:
            det["batch_size"] = int(setting.pop("det_batch_size"))
        if "rec_batch_size" in setting:
            rec["batch_size"] = int(setting.pop("rec_batch_size"))
        for beta_key, key in (("index", "index"), ("score_thres", "rec_threshold"), ("return_k", "rec_topk"), ("det_threshold", "det_threshold")):
            if beta_key in setting:
                out[key] = setting.pop(beta_key)
        subs = {"Detection": det, "Recognition": rec}
        accepted = ["det_model", "rec_model", "det_batch_size", "rec_batch_size", "index", "score_thres", "return_k", "device"]
    else:
        raise ValueError(
            f"{where}pipeline {name!r} has no PaddleX 3.0-beta `Pipeline:` layout that pxflow reads "
            f"(beta layouts: {sorted([*BETA_SINGLE_MODEL, 'PP-ShiTuV2'])}); write it with `pipeline_name:` + `SubModules:`"
        )
    if setting:
        raise ValueError(f"{where}unknown key(s) {sorted(setting)} in the PaddleX Pipeline section of {name}; known: {accepted}")
    out["SubModules"] = subs
    for key, value in config.items():  # keep our own sections (Pxflow ...) if a beta file carries them
        if key not in ("Global", "Pipeline", "NOTE"):
            out[key] = value
    if not with_defaults:
        return out
    try:
        defaults = read_builtin(name)
    except ValueError:
        defaults = {}
    return deep_merge(defaults, out)


def read_builtin(name: str) -> dict[str, Any]:
    with open(builtin_config_path(name), encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


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
