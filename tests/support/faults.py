"""Test-only crash injection: SIGKILL a process at a named checkpoint (:mod:`pxflow.pipelines.hooks`).

``PXFLOW_KILL_AT=<point>[:<n>]`` makes the ``n``-th (default first) arrival at ``<point>``
SIGKILL the process on the spot: no cleanup, no ``finally``, exactly like the OOM killer or
a lost node. With ``PXFLOW_KILL_ONCE=<file>`` only the first process to get there dies (it
creates the file first), so a worker pool that restarts its workers loses exactly one.

Importing this module registers the hook. The processes a test starts import it through
``PXFLOW_WORKER_IMPORTS`` (the CLI, local workers and deployment child runs import those
modules): :func:`kill_env` is the environment that does it.
"""

from __future__ import annotations

import os
import signal
import threading

from pxflow.pipelines.hooks import POINTS, register_hook

ENV = "PXFLOW_KILL_AT"
ONCE_ENV = "PXFLOW_KILL_ONCE"
MODULE = __name__
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kill_env(point: str, once: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment for a subprocess that must die at ``point``: the variables, and this module
    imported there (the checkout on ``PYTHONPATH``, so a console script finds ``tests``)."""
    name = point.partition(":")[0]
    if name not in POINTS:
        raise ValueError(f"unknown checkpoint {name!r}; points: {POINTS}")
    env = {ENV: point, "PXFLOW_WORKER_IMPORTS": MODULE,
           "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
    if once is not None:
        env[ONCE_ENV] = str(once)
    return env


class KillAt:
    """The hook: reads ``PXFLOW_KILL_AT`` at each checkpoint (a test may set it after import)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}

    def armed(self, point: str) -> bool:
        return (os.environ.get(ENV) or "").partition(":")[0] == point

    def reached(self, point: str) -> None:
        wanted = os.environ.get(ENV)
        if not wanted:
            return
        name, _, nth = wanted.partition(":")
        if name != point:
            return
        with self._lock:
            self._seen[point] = self._seen.get(point, 0) + 1
            hit = self._seen[point] == int(nth or 1)
        if not hit:
            return
        once = os.environ.get(ONCE_ENV)
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # another process already died here
        os.kill(os.getpid(), signal.SIGKILL)


HOOK = KillAt()
register_hook(HOOK)
