"""A graceful stop of a running annotate flow in this process (the CLI's SIGTERM).

SIGTERM used to raise ``SystemExit`` in the middle of Prefect's engine: Prefect reported
"Crash detected!", the run printed no summary, and a scheduler could not tell what was
kept. Instead the CLI's handler calls :func:`request_stop`; the flow stops planning new
shards, lets the shards in flight commit (a shard commits all its rows or none), writes
its summary with ``"interrupted": true`` and fails, so a rerun finishes the rest.
"""

from __future__ import annotations

import threading

_stop = threading.Event()


def request_stop() -> None:
    """Ask the running flow to stop planning new shards (safe from a signal handler)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def clear_stop() -> None:
    """Forget an earlier request (a new run starts)."""
    _stop.clear()
