"""pxflow's own settings: the ``Pxflow:`` section of a PaddleX pipeline YAML, typed, with defaults in one place.

PaddleX ignores the section, so our YAMLs stay PaddleX-readable. Precedence is
CLI/flow parameters > YAML > these defaults (:func:`pxflow.pipelines.overrides.apply_overrides`
applies the first). An unknown key is an error naming it: a typo (``infer_worker``)
must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

#: settings that change speed, never rows: they stay out of annotation keys.
SPEED_ONLY = frozenset({"cpu_threads", "load_workers", "prefetch", "infer_workers"})


@dataclass(frozen=True)
class PxflowSettings:
    """Typed view of ``config["Pxflow"]``."""

    #: an inference backend name (``pxflow.pipelines.models.backends.backend_names()``) or ``auto``
    backend: str = "auto"
    #: threads per predictor; None: the cores this process may use, split between ``infer_workers``
    cpu_threads: int | None = None
    #: threads reading + decoding + preprocessing ahead of inference
    load_workers: int = 2
    #: loaded inputs allowed to wait for the model (bounds memory)
    prefetch: int = 8
    #: batches inferred at once (each with ``cpu_threads // infer_workers`` threads)
    infer_workers: int = 1
    #: SAM prompts per decoder call (the image embedding is reused across calls)
    max_prompts_per_call: int = 64
    #: small_object_detection: sliced inference ``{size, overlap, nms_iou, include_full}``; None: off
    slice: dict[str, Any] | None = None
    #: open_vocabulary_segmentation: take box prompts from another pipeline ``{pipeline, config, threshold, labels}``
    prompts_from: dict[str, Any] | None = None
    #: free-form extras for pipelines registered outside pxflow (their own keys live here)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> "PxflowSettings":
        """Validate a ``Pxflow:`` mapping; ``None`` values mean "the default"."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(cls.field_names()) - {"extra"})
        if unknown:
            raise ValueError(f"unknown Pxflow setting(s) {unknown}; known: {list(cls.field_names())}")
        values = {k: v for k, v in section.items() if v is not None or k in ("cpu_threads", "slice", "prompts_from")}
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("load_workers", "prefetch", "infer_workers", "max_prompts_per_call"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Pxflow.{name} must be an integer >= 1, got {value!r}")
        if self.cpu_threads is not None and (not isinstance(self.cpu_threads, int) or self.cpu_threads < 1):
            raise ValueError(f"Pxflow.cpu_threads must be null or an integer >= 1, got {self.cpu_threads!r}")
        for name in ("slice", "prompts_from", "extra"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"Pxflow.{name} must be a mapping or null, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        """The section as it goes back into a config dict (``extra`` only when used)."""
        out = dataclasses.asdict(self)
        if not out["extra"]:
            out.pop("extra")
        return out

    def replace(self, **changes: Any) -> "PxflowSettings":
        return dataclasses.replace(self, **changes)

    def semantic(self) -> dict[str, Any]:
        """The settings that can change rows (what an annotation key hashes)."""
        return {k: v for k, v in self.as_dict().items() if k not in SPEED_ONLY}
