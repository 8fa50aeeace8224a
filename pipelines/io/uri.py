"""URI parsing: the one place that decides whether a string is local, http(s) or s3."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class ParsedURI:
    """A location split into scheme (``file``, ``http``, ``https``, ``s3``) and parts."""

    scheme: str
    bucket: str  # s3 bucket or http host; empty for local paths
    path: str  # local absolute path, s3 key (no leading slash) or http path

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"


def parse_uri(uri: str | os.PathLike) -> ParsedURI:
    """Split ``uri``; plain paths and ``file://`` both become absolute local paths."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        rest = text[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"s3 URI without a bucket: {text!r}")
        return ParsedURI("s3", bucket, key)
    if text.startswith(("http://", "https://")):
        parsed = urlparse(text)
        return ParsedURI(parsed.scheme, parsed.netloc, parsed.path)
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    return ParsedURI("file", "", os.path.abspath(os.path.expanduser(text)))


def is_remote(uri: str | os.PathLike) -> bool:
    """True for http(s) and s3 locations."""
    return parse_uri(uri).scheme != "file"


def join_uri(base: str | os.PathLike, *parts: str) -> str:
    """Join path segments under ``base`` keeping its scheme (``/`` for remote URIs)."""
    text = os.fspath(base)
    if is_remote(text) or text.startswith("file://"):
        out = text.rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}"
        return out
    return os.path.join(text, *parts)


def uri_name(uri: str) -> str:
    """The last path segment (file name) of any URI."""
    return parse_uri(uri).path.rstrip("/").rsplit("/", 1)[-1]
