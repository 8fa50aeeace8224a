"""One way to spell every flag, the other accepted: kebab-case first, PaddleX's snake_case as alias.

Subcommands were written at different times (``index build --index_type`` but ``serve
--index-type``), so a script had to know which spelling each one took. :func:`both_spellings`
runs over a finished parser (and its sub-parsers) once: every ``--long_flag`` gains
``--long-flag`` and the other way round, help shows the kebab one first, and a mistyped
sub-command, choice or flag gets a "did you mean" in argparse's error line.

Two spellings made argparse's prefix matching ambiguous where the documents' prose is not:
``--model DIR`` matched both ``--model-dir`` and ``--model_dir`` and failed. :data:`ALIASES`
adds such words as exact aliases; any other abbreviation still resolves only when it names
one flag, and an ambiguous one is refused naming the flags it could mean.
"""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Iterable

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
#: flag -> the other words that mean it (``--model``: PaddleX's prose for the model directory)
ALIASES: dict[str, tuple[str, ...]] = {"--model-dir": ("--model",)}


def suggestion(word: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known``, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _alternatives(option: str) -> list[str]:
    if not option.startswith("--") or len(option) <= 3:
        return []
    body = option[2:]
    return [alt for alt in (f"--{body.replace('_', '-')}", f"--{body.replace('-', '_')}") if alt != option]


def _all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags of ``parser`` and its sub-parsers (argparse reports a sub-command's unknown flag at the top)."""
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _all_flags(sub)
    return flags


def _suggesting_error(parser: argparse.ArgumentParser) -> None:
    """Wrap ``parser.error`` so an invalid choice or unknown flag names its closest known spelling."""
    original = parser.error

    def error(message: str):
        choice = _INVALID_CHOICE.search(message)
        if choice:
            message += suggestion(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        unknown = _UNRECOGNIZED.search(message)
        if unknown:
            for token in unknown.group(1).split():
                if token.startswith("--"):
                    hint = suggestion(token.split("=", 1)[0], _all_flags(parser))
                    if hint:
                        message += f" ({token}:{hint.lstrip(';')})"
        return original(message)

    parser.error = error  # type: ignore[method-assign]


def both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` (changed in place) with both spellings of every long flag, in it and every sub-parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(p): p for p in action.choices.values()}.values():
                both_spellings(sub)
            continue
        for option in list(action.option_strings):
            for alt in (*_alternatives(option), *ALIASES.get(option, ())):
                if alt not in parser._option_string_actions:
                    action.option_strings.append(alt)
                    parser._option_string_actions[alt] = action
        # short flags, then kebab-case, then the snake_case aliases (the order help prints them in)
        action.option_strings.sort(key=lambda o: (o.startswith("--"), "_" in o))
    _suggesting_error(parser)
    return parser
