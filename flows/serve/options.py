"""The options of one ``pxflow serve`` app (the CLI flags, as a value)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .limits import Limits


@dataclass
class ServeOptions:
    limits: Limits = field(default_factory=Limits)
    #: draw the visualisation into ``result.image`` (a request's ``visualize`` overrides it)
    visualize: bool = True
    jpeg_quality: int = 90
    max_batch: int = 8
    window_ms: float = 5.0
    #: model calls running at once (per model): 2 overlaps one call's tail with the next call's start
    workers: int = 2
    #: index endpoints (PP-ShiTu): where they create and find versioned indexes (local folder or s3:// prefix)
    index_root: str | None = None
    index_type: str = "Flat"
    metric_type: str = "IP"
    #: run blank images through the model (``pipeline.warm_up``) before /ready answers 200
    warmup: bool = True
