"""Stopping the servers and workers tests start, by PID: politely first, then for certain."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0, group: bool = False) -> None:
    """SIGTERM ``proc`` (its whole process group when ``group``), wait ``grace_s``, then SIGKILL and reap it.

    A test's assertions are done by then; what is left is not leaking a server or a worker into the next test.
    """
    def send(sig: int) -> None:
        try:
            (os.killpg if group else os.kill)(proc.pid, sig)
        except ProcessLookupError:  # gone already (the group: every member)
            pass

    if proc.poll() is not None and not group:  # a group may outlive its leader
        return
    send(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)
