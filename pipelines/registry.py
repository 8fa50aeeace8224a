"""Pipeline names -> their :class:`~pxflow.pipelines.spec.PipelineSpec`, each pipeline package describing itself.

Adding a pipeline is adding a folder (``pipeline.py``, its result class, an options model and
``spec.py`` with ``SPEC``) and registering the spec: the built-in ones are listed in
:data:`BUILTIN_SPECS`; a plug-in calls :func:`register_pipeline` from its ``pxflow.plugins``
entry point (:mod:`pxflow.pipelines.plugins`), which every lookup here loads first, so a
pipeline installed as a distribution is created by name, from its own YAML, in every process.
Reading a spec imports nothing heavy: the pipeline class loads on first use.
"""

from __future__ import annotations

import threading
import warnings
from importlib import metadata
from typing import Any

from .config import load_config
from .plugins import load_plugins
from .spec import PipelineSpec, resolve

#: the specs pxflow ships (``<package>/spec.py``; cheap to import), registered when this module loads
BUILTIN_SPECS = (
    "pxflow.pipelines.object_detection.spec:SPEC",
    "pxflow.pipelines.small_object_detection.spec:SPEC",
    "pxflow.pipelines.instance_segmentation.spec:SPEC",
    "pxflow.pipelines.open_vocabulary_segmentation.spec:SPEC",
    "pxflow.pipelines.pp_shitu_v2.spec:SPEC",
)
#: the entry-point group of ``name = "package.module:Class"`` pipelines before ``pxflow.plugins`` (deprecated)
LEGACY_ENTRY_POINT_GROUP = "pxflow.pipelines"

#: pipeline_name -> its spec: the built-in ones, plus plug-ins' once a lookup has loaded them
PIPELINES: dict[str, PipelineSpec] = {}
_lock = threading.RLock()
_legacy_read = False


def register_pipeline(spec: "PipelineSpec | str", target: Any = None) -> PipelineSpec:
    """Register a pipeline: ``register_pipeline(PipelineSpec(...))``.

    The old form ``register_pipeline(name, "package.module:Class")`` still works: it makes a spec
    with no default config (create it from a YAML path, not by name) and no predict options.
    A later registration of the same name replaces the earlier one.
    """
    if not isinstance(spec, PipelineSpec):
        if target is None:
            raise TypeError("register_pipeline() takes a PipelineSpec, or a name and a 'package.module:Class' target")
        spec = PipelineSpec(name=str(spec), pipeline=target, config=None)
    elif target is not None:
        raise TypeError("register_pipeline(spec) takes no target: the spec names its pipeline class")
    with _lock:
        PIPELINES[spec.name] = spec
    return spec


def _load() -> None:
    """Plug-ins (``pxflow.plugins``, once per process), then the deprecated ``pxflow.pipelines`` group (once)."""
    global _legacy_read
    load_plugins()
    with _lock:
        if _legacy_read:
            return
        _legacy_read = True
        for ep in metadata.entry_points(group=LEGACY_ENTRY_POINT_GROUP):
            if ep.name not in PIPELINES:
                warnings.warn(
                    f"pipeline {ep.name!r} comes from the deprecated entry-point group {LEGACY_ENTRY_POINT_GROUP!r}: "
                    "register a PipelineSpec from a 'pxflow.plugins' entry point instead",
                    DeprecationWarning, stacklevel=3,
                )
                register_pipeline(ep.name, ep.value)


for _target in BUILTIN_SPECS:
    register_pipeline(resolve(_target))


def pipeline_names() -> list[str]:
    """Every registered pipeline name, installed plug-ins included."""
    _load()
    return sorted(PIPELINES)


def pipeline_spec(name: str) -> PipelineSpec:
    """The spec registered for ``pipeline_name``; a ``ValueError`` naming the known ones (and the closest) otherwise."""
    _load()
    try:
        return PIPELINES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(PIPELINES), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown pipeline_name {name!r}{hint} (available: {', '.join(sorted(PIPELINES))})") from None


def spec_of(pipeline: str) -> PipelineSpec:
    """The spec of ``pipeline``: a registered name, or a YAML path (its ``pipeline_name``)."""
    _load()
    if pipeline in PIPELINES:
        return PIPELINES[pipeline]
    return pipeline_spec(load_config(pipeline)["pipeline_name"])


def pipeline_class(name: str):
    """The class registered for ``pipeline_name``; a clear error listing the known names otherwise."""
    return pipeline_spec(name).pipeline_class()


def predict_options_model(name: str) -> Any:
    """The options model of ``pipeline_name`` (None: it takes no options, or it is not registered)."""
    try:
        spec = pipeline_spec(name)
    except ValueError:
        return None
    return spec.options_model()


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
    - ``index``: the index directory or ``IndexData`` the pipeline searches by default; only for a
      pipeline whose spec ``takes_index`` (PP-ShiTuV2), a ``TypeError`` for any other.
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
    spec = pipeline_spec(merged["pipeline_name"])
    if index is not None:
        if not spec.takes_index:
            searching = ", ".join(n for n in pipeline_names() if PIPELINES[n].takes_index) or "none registered"
            raise TypeError(f"create_pipeline(index=...) applies to pipelines that search an index ({searching}), "
                            f"not {spec.name}")
        merged["index"] = index
    device = device if device is not None else merged.get("device")
    if device is not None:
        device = normalize_device(device)  # an unsupported device fails here, before any model loads
        if "device" in merged:
            merged["device"] = device
    return spec.pipeline_class()(merged, device=device)
