"""Gallery label files: ``path<whitespace>label`` per line, as PaddleX/PaddleClas write them.

The separator is the first run of whitespace (the shared drink gallery uses a TAB and
Chinese labels); everything after it is the label, inner spaces included. Paths are
relative to ``root`` (PaddleX's ``gallery_imgs``), by default the label file's folder.
Blank lines are skipped; a line without a label is an error naming its line number.
"""

from __future__ import annotations

import re

from ..io import storage
from ..io.uri import is_remote, join_uri, parse_uri

_SEPARATOR = re.compile(r"\s+")


def parse_gallery_lines(text: str, source: str = "<gallery>") -> list[tuple[str, str]]:
    """``[(relative path, label)]`` from the text of a label file."""
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        parts = _SEPARATOR.split(line, maxsplit=1)
        if len(parts) != 2 or not parts[1].strip():
            raise ValueError(f"{source}:{number}: expected 'path<whitespace>label', got {line!r}")
        entries.append((parts[0], parts[1].strip()))
    return entries


def label_file_dir(label_file: str) -> str:
    """The folder holding ``label_file`` (a local path or a remote URI)."""
    if is_remote(label_file):
        return label_file.rsplit("/", 1)[0]
    return parse_uri(label_file).path.rsplit("/", 1)[0] or "/"


def load_gallery(label_file: str, root: str | None = None) -> tuple[list[str], list[str]]:
    """``(image URIs, labels)`` listed in ``label_file``; paths resolved against ``root``."""
    text = storage.read_bytes(label_file).decode("utf-8")
    base = root or label_file_dir(label_file)
    entries = parse_gallery_lines(text, label_file)
    return [join_uri(base, path) for path, _ in entries], [label for _, label in entries]
