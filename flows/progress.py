"""In-process progress of a running annotate flow (the CLI draws its progress bar from it)."""

from __future__ import annotations

from typing import Any, Callable

ProgressCallback = Callable[[dict[str, Any]], None]
_progress: ProgressCallback | None = None


def set_progress_callback(callback: ProgressCallback | None) -> None:
    """Receive ``{"shards_done", "shards_planned", "images_done", "listed", "listing_done"}`` updates."""
    global _progress
    _progress = callback


def report(**state: Any) -> None:
    if _progress is not None:
        _progress(state)
