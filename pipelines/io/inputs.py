"""Turn what ``predict()`` accepts into a stream of loadable input items.

PaddleX accepts an ndarray (BGR), a file path, a directory, an http(s) URL or a
list of those; we add ``s3://`` keys and prefixes. Expansion is lazy, so a
prefix with millions of keys is never held in memory, and loading (download +
decode) is a separate step that callers run in a thread pool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from . import storage
from .errors import InputError
from .images import IMAGE_SUFFIXES, check_array, decode_image
from .uri import parse_uri


@dataclass(frozen=True)
class InputItem:
    """One image to predict: a URI to load, or an array given by the caller."""

    uri: str | None
    array: np.ndarray | None = None

    def load(self) -> np.ndarray:
        """Read and decode (or validate) the image; raises :class:`InputError`."""
        if self.array is not None:
            return check_array(self.array)
        assert self.uri is not None
        return decode_image(storage.read_bytes(self.uri), self.uri)


def iter_inputs(inputs: Any) -> Iterator[InputItem]:
    """Expand ``inputs`` (array, path, directory, URL, s3 URI/prefix, or a list of them) lazily."""
    if isinstance(inputs, np.ndarray):
        yield InputItem(None, inputs)
        return
    if isinstance(inputs, InputItem):  # already resolved (batch jobs pass their own items)
        yield inputs
        return
    if isinstance(inputs, (str, os.PathLike)):
        yield from _expand_location(os.fspath(inputs))
        return
    if isinstance(inputs, Iterable):
        for item in inputs:
            if isinstance(item, (list, tuple)):
                raise TypeError("nested input lists are not supported")
            yield from iter_inputs(item)
        return
    raise TypeError(f"unsupported input type {type(inputs).__name__}")


def _expand_location(uri: str) -> Iterator[InputItem]:
    parsed = parse_uri(uri)
    if parsed.scheme in ("http", "https"):
        yield InputItem(uri)
        return
    if parsed.scheme == "file" and not os.path.isdir(parsed.path):
        yield InputItem(uri)  # a missing file becomes a not_found result, not a crash
        return
    if parsed.scheme == "s3" and (not parsed.path or parsed.path.endswith("/") or not _looks_like_file(parsed.path)):
        listed = False
        for info in storage.list_objects(uri, IMAGE_SUFFIXES):
            listed = True
            yield InputItem(info.uri)
        if not listed:
            raise InputError(uri, "not_found", "no images under this prefix")
        return
    if parsed.scheme == "s3":
        yield InputItem(uri)
        return
    for info in storage.list_objects(uri, IMAGE_SUFFIXES):
        yield InputItem(info.uri)


def _looks_like_file(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return "." in name
