"""Pipeline names -> implementing classes, imported lazily so that each pipeline's deps load on use.

Adding a pipeline is adding a folder (``pipeline.py`` + its result class) and one registration:
an entry here, or :func:`register_pipeline` (an installed package calls it from its
``pxflow.plugins`` entry point, :mod:`pxflow.pipelines.plugins`, which the CLI,
:func:`create_pipeline` and every worker process load).
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import load_config
from .plugins import load_plugins
from .spec import PipelineSpec, resolve

#: pipeline_name -> "module:Class" (or the class itself, once registered at run time)
PIPELINES: dict[str, Any] = {
    "object_detection": "pxflow.pipelines.object_detection.pipeline:ObjectDetectionPipeline",
    "small_object_detection": "pxflow.pipelines.small_object_detection.pipeline:SmallObjectDetectionPipeline",
    "instance_segmentation": "pxflow.pipelines.instance_segmentation.pipeline:InstanceSegmentationPipeline",
    "open_vocabulary_segmentation": "pxflow.pipelines.open_vocabulary_segmentation.pipeline:OpenVocabularySegmentationPipeline",
    "PP-ShiTuV2": "pxflow.pipelines.pp_shitu_v2.pipeline:ShiTuV2Pipeline",
}
#: pipeline_name -> its spec, for the built-ins (``<package>/spec.py``) and those registered with a spec
SPECS: dict[str, Any] = {
    "object_detection": "pxflow.pipelines.object_detection.spec:SPEC",
    "small_object_detection": "pxflow.pipelines.small_object_detection.spec:SPEC",
    "instance_segmentation": "pxflow.pipelines.instance_segmentation.spec:SPEC",
    "open_vocabulary_segmentation": "pxflow.pipelines.open_vocabulary_segmentation.spec:SPEC",
    "PP-ShiTuV2": "pxflow.pipelines.pp_shitu_v2.spec:SPEC",
}


def register_pipeline(name: "str | PipelineSpec", target: Any = None) -> None:
    """Make ``pipeline_name: name`` resolve to ``target`` (a pipeline class or ``"package.module:Class"``),
    or register a whole :class:`~pxflow.pipelines.spec.PipelineSpec` (its serving endpoints included)."""
    if isinstance(name, PipelineSpec):
        SPECS[name.name] = name
        PIPELINES[name.name] = name.pipeline
        return
    PIPELINES[name] = target


def pipeline_spec(name: str) -> PipelineSpec:
    """The spec of ``pipeline_name``; a pipeline registered by class alone gets one without endpoints."""
    if name in SPECS:
        return resolve(SPECS[name])
    return PipelineSpec(name=name, pipeline=pipeline_class(name), config=None)


def pipeline_names() -> list[str]:
    """Every registered pipeline name, installed plug-ins included."""
    _load_entry_points()
    return sorted(PIPELINES)


def _load_entry_points() -> None:
    load_plugins()


def pipeline_class(name: str):
    """The class registered for ``pipeline_name``; a clear error listing the known names otherwise."""
    if name not in PIPELINES:
        _load_entry_points()
    try:
        target = PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline_name {name!r}; available: {sorted(PIPELINES)}") from None
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        target = getattr(importlib.import_module(module), cls)
    return target


def create_pipeline(
    pipeline: str | None = None,
    config: "dict[str, Any] | str | None" = None,
    device: str | None = None,
    pp_option: Any = None,
    use_hpip: bool | None = None,
    hpi_config: "dict[str, Any] | None" = None,
    *,
    pipeline_name: str | None = None,
    index: Any = None,
    enable_hpi: bool | None = None,
    hpi_params: "dict[str, Any] | None" = None,
    **overrides: Any,
):
    """PaddleX's ``create_pipeline(pipeline, config, device, pp_option, use_hpip, hpi_config)``.

    - ``pipeline``: a pipeline name or YAML path; ``pipeline_name=`` is PaddleX 2.x/3.0-beta's spelling
      of it. ``config``: a dict merged over that YAML, or a YAML path. Either may use PaddleX
      3.0-beta's ``Global`` + ``Pipeline`` layout (:func:`pxflow.pipelines.config.load_config`).
    - ``device``: ``cpu``, ``gpu``, ``gpu:N`` (``gpu:1,2`` uses the first); other devices fail here
      (:func:`pxflow.pipelines.models.backends.parse_device`).
    - ``index`` (PP-ShiTuV2): the index directory or ``IndexData`` the pipeline searches by default.
    - ``use_hpip`` / ``enable_hpi`` (PaddleOCR's spelling) / ``hpi_config`` / ``hpi_params``: there is no
      high-performance plugin; a ``UserWarning`` says what pxflow does instead (the ``auto`` backend,
      which prefers ONNX Runtime; :func:`~pxflow.pipelines.models.backends.hpi_substitute`).
    - ``pp_option``: mapped where pxflow has an equivalent, with a warning
      (:func:`~pxflow.pipelines.models.backends.pp_option_overrides`).
    - Any other keyword must name a ``Pxflow`` setting (``backend``, ``cpu_threads``, ``load_workers``,
      ``prefetch``, ``infer_workers`` ...; :class:`pxflow.pipelines.settings.PxflowSettings`) and
      overrides it; anything else is a ``TypeError`` naming it.
    """
    import warnings

    from .models.backends import hpi_substitute, normalize_device, pp_option_overrides
    from .settings import PxflowSettings

    load_plugins()  # a plug-in's pipeline, predictors and stores, before the config is read
    if pipeline_name is not None:
        if pipeline is not None and pipeline != pipeline_name:
            raise TypeError(f"create_pipeline() got both pipeline={pipeline!r} and pipeline_name={pipeline_name!r}")
        pipeline = pipeline_name
    known = set(PxflowSettings.field_names())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"create_pipeline() got unexpected keyword argument(s) {unknown}; it takes pipeline, config, device, "
            f"pp_option, use_hpip, hpi_config, pipeline_name, index, and the Pxflow settings {sorted(known)}"
        )
    px = {k: v for k, v in overrides.items() if v is not None}
    merged = load_config(pipeline, config)
    if pp_option is not None:
        mapped, message = pp_option_overrides(pp_option)
        if device is None and "device" in mapped:
            device = str(mapped["device"])
        for key in ("backend", "cpu_threads"):
            if key in mapped:
                px.setdefault(key, mapped[key])
        warnings.warn(message, UserWarning, stacklevel=2)
    # PaddleX 3.x also reads use_hpip / hpi_config from the top of the config; the arguments win.
    config_hpip, config_hpi = merged.pop("use_hpip", None), merged.pop("hpi_config", None)
    hpip = next((v for v in (use_hpip, enable_hpi) if v is not None), config_hpip)
    hpi = hpi_config if hpi_config is not None else hpi_params if hpi_params is not None else config_hpi
    if hpip:
        backend, message = hpi_substitute(hpi, px.get("backend") or merged["Pxflow"].get("backend"))
        px["backend"] = backend
        warnings.warn(message, UserWarning, stacklevel=2)
    elif hpi:
        warnings.warn("hpi_config is ignored: use_hpip is not set (and pxflow has no high-performance plugin)", UserWarning, stacklevel=2)
    merged["Pxflow"].update(px)
    if index is not None:
        no_index = ("object_detection", "small_object_detection", "instance_segmentation", "open_vocabulary_segmentation")
        if merged["pipeline_name"] in no_index:
            raise TypeError(f"create_pipeline(index=...) applies to PP-ShiTuV2, not {merged['pipeline_name']}")
        merged["index"] = index
    device = device if device is not None else merged.get("device")
    if device is not None:
        device = normalize_device(device)  # an unsupported device fails here, before any model loads
        if "device" in merged:
            merged["device"] = device
    cls = pipeline_class(merged["pipeline_name"])
    return cls(merged, device=device)
