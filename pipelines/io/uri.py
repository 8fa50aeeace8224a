"""URI parsing: the one place that decides which store (local, http(s), s3, ...) a string belongs to."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class ParsedURI:
    """A location split into scheme (``file``, ``http``, ``https``, ``s3``) and parts."""

    scheme: str
    bucket: str  # s3 bucket or http host; empty for local paths
    path: str  # local absolute path, s3 key (no leading slash) or http path


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def uri_scheme(uri: str | os.PathLike) -> str:
    """The lower-cased ``scheme`` of ``scheme://...``, or ``file`` for a plain path."""
    match = _SCHEME.match(os.fspath(uri))
    return match.group(1).lower() if match else "file"


def parse_uri(uri: str | os.PathLike) -> ParsedURI:
    """Split ``uri``; plain paths and ``file://`` both become absolute local paths.

    The store registered for the scheme parses it (:mod:`pipelines.io.stores`);
    an unknown ``xxx://`` (``gs://``, ``s3a://``) raises
    :class:`~pipelines.io.stores.UnsupportedSchemeError` naming the supported schemes.
    """
    from .stores import store_class

    text = os.fspath(uri)
    return store_class(uri_scheme(text), text).parse(text)


def input_identity(uri: str | os.PathLike) -> str:
    """The one name of an input: what the tables key its row by and what planning deduplicates on.

    The store for its scheme decides (``Store.identity``): the real path for local files (``/./``,
    ``//``, ``file://`` and symlinks resolved; not valid UTF-8: a percent-escaped ``file://`` URI),
    ``s3://bucket/key`` as is, an RFC 3986-normalised URL. A URI no store can parse (``gs://``)
    keeps its spelling: it becomes an error row under that name. The result is always valid UTF-8.
    """
    text = os.fspath(uri)
    try:
        from .stores import store_class

        identity = store_class(uri_scheme(text), text).identity(text)
    except ValueError:  # UnsupportedSchemeError, or a URI its store cannot parse
        identity = text
    try:
        identity.encode("utf-8")
    except UnicodeEncodeError:  # a remote URI mis-decoded on its way here: escape the stray bytes
        identity = quote(identity.encode("utf-8", "surrogateescape"), safe="".join(map(chr, range(33, 127))))
    return identity


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
