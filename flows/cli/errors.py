"""Usage errors of the ``pxflow`` commands: one line on stderr, exit status 2, nothing started.

A :class:`UsageError` is what a command raises for bad input it found before any work
(an argument, a location, a name); :func:`pxflow.flows.cli.main` prints it as
``pxflow <command>: <message>`` and :func:`pxflow.flows.cli.run` exits 2 right away.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input found before any work: the message names the cause and the fix, on one line."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message with its line breaks folded (native libraries' messages span lines)."""
    return " ".join(str(exc).split()) or type(exc).__name__
