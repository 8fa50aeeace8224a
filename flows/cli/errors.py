"""Usage errors of the ``pxflow`` commands: one line on stderr, exit status 2, nothing started.

A :class:`UsageError` is what a command raises for bad input it found before any work
(an argument, a location, a name, a model); :func:`pxflow.flows.cli.main` prints it as
``pxflow <command>: <message>`` and :func:`pxflow.flows.cli.run` exits 2. Scripts and
schedulers read stderr's last line: argparse's 16-line usage block, pydantic's multi-line
report or a traceback would bury the cause, so every usage error here is one line.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping, NoReturn


class UsageError(ValueError):
    """Bad input found before any work: the message names the cause and the fix, on one line."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message with its line breaks folded (native libraries' messages span lines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``<prog>: error: <message> (see <prog> --help)``.

    argparse's own ``error()`` prints the whole usage block first; subparsers inherit this class
    (``add_subparsers`` builds them with the parent's class), so ``pxflow index build`` gets it too.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def validation_line(exc: Any, flags: Mapping[str, str] | None = None) -> str:
    """A pydantic ``ValidationError`` as one line naming the CLI flag of each bad field.

    ``flags`` maps a field to its flag where they differ (``concurrency`` -> ``--workers``);
    any other field ``x_y`` is ``--x-y``. pydantic's own text spans lines and ends in a URL.
    """
    parts = []
    for error in exc.errors():
        field = next((str(p) for p in error.get("loc", ()) if isinstance(p, str)), None)
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if field is None:
            parts.append(message)
            continue
        flag = (flags or {}).get(field, "--" + field.replace("_", "-"))
        given = error.get("input")
        shown = f" (got {given!r})" if isinstance(given, (int, float, str)) and not isinstance(given, bool) else ""
        parts.append(f"{flag}: {message}{shown}")
    return "; ".join(" ".join(p.split()) for p in parts) or one_line(exc)


def model_error_line(exc: BaseException, fix: str) -> str:
    """A model that is neither cached nor downloadable, as one line with the CLI's way out
    (``fix``: "give --model-dir DIR")."""
    text = one_line(exc)
    if "pass model_dir" in text:  # the library's wording: name the CLI's flag instead
        return text.replace("pass model_dir", fix)
    return f"{text.rstrip('.')}; {fix} (a local or s3:// model directory)"
