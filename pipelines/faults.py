"""Named points where a test can kill this process, to prove that a crash anywhere loses and duplicates nothing.

``PXFLOW_KILL_AT=<point>[:<n>]`` makes the ``n``-th (default first) arrival at ``<point>``
SIGKILL the process on the spot: no cleanup, no ``finally``, exactly like the OOM killer or
a lost node. With ``PXFLOW_KILL_ONCE=<file>`` only the first process to get there dies (it
creates the file first), so a worker pool that restarts its workers loses exactly one.
Unset (always, outside the crash tests), a checkpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

#: every point the code passes: an annotate run's, in run order, then an index writer's
POINTS = ("after_plan", "after_infer", "after_objects_commit", "after_images_commit", "between_replace_swaps",
          "before_runs_row", "index_mid_upload", "index_after_upload")
ENV = "PXFLOW_KILL_AT"
_lock = threading.Lock()
_seen: dict[str, int] = {}


def armed(point: str) -> bool:
    """Whether ``PXFLOW_KILL_AT`` names ``point`` (to stage a partial write right before it)."""
    return (os.environ.get(ENV) or "").partition(":")[0] == point


def checkpoint(point: str) -> None:
    """SIGKILL this process if ``PXFLOW_KILL_AT`` names this point (and this is its n-th arrival)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    with _lock:
        _seen[point] = _seen.get(point, 0) + 1
        hit = _seen[point] == int(nth or 1)
    if not hit:
        return
    once = os.environ.get("PXFLOW_KILL_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another process already died here
    os.kill(os.getpid(), signal.SIGKILL)
