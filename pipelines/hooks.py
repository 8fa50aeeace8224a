"""Named checkpoints on the commit path: no-ops unless a hook is registered.

Production code marks the points where a crash must lose and duplicate nothing
(``checkpoint("after_infer")``: the order of an annotate run is :data:`POINTS`). The crash
tests register a hook that SIGKILLs the process at one of them (``tests/support/faults.py``,
loaded into the processes they start through ``PXFLOW_WORKER_IMPORTS``), so the kill logic
and its environment variables live with the tests, not here. Unhooked, a checkpoint costs
one empty-list check.
"""

from __future__ import annotations

from typing import Protocol

#: every point the code passes: an annotate run's, in run order, then an index writer's
POINTS = ("after_plan", "after_infer", "after_objects_commit", "after_images_commit", "between_replace_swaps",
          "before_runs_row", "index_mid_upload", "index_after_upload")


class CheckpointHook(Protocol):
    """What a registered hook answers."""

    def armed(self, point: str) -> bool:
        """Whether ``point`` will act (a writer stages a partial write right before it)."""

    def reached(self, point: str) -> None:
        """Called at ``point`` (may never return: a crash test's hook kills the process)."""


_hooks: list[CheckpointHook] = []


def register_hook(hook: CheckpointHook) -> None:
    """Call ``hook`` at every checkpoint of this process (idempotent)."""
    if hook not in _hooks:
        _hooks.append(hook)


def unregister_hook(hook: CheckpointHook) -> None:
    if hook in _hooks:
        _hooks.remove(hook)


def checkpoint(point: str) -> None:
    """Mark ``point``: every registered hook sees it."""
    for hook in _hooks:
        hook.reached(point)


def armed(point: str) -> bool:
    """Whether a registered hook will act at ``point``."""
    return any(hook.armed(point) for hook in _hooks)
