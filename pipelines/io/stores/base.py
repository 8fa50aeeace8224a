"""The interface every storage backend implements, one class per URI scheme.

Modelled on ``pyarrow.fs.FileSystem`` / Ray Data's filesystems: a :class:`Store`
knows one kind of location (local paths, ``s3://``, ``http(s)://``), parses its
own URIs and translates its own failures into the pipeline error vocabulary
(:mod:`pipelines.io.errors`). :class:`pipelines.io.storage.Storage` picks the
store for each URI; nothing here holds process-global settings.

Every operation takes full URIs (as the caller wrote them) so results such as
:attr:`ObjectInfo.uri` can be fed straight back into another call.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Iterable, Iterator

from ..uri import ParsedURI

if TYPE_CHECKING:  # pragma: no cover
    from ..storage import Storage


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a stat knows about one object."""

    uri: str
    size: int  # -1 when unknown (an entry listed although it cannot be read, a server without Content-Length)
    etag: str | None = None
    #: the store's last-modified time (epoch seconds: the file's mtime, S3's LastModified) where the
    #: call saw it; what a lease compares instead of the writer's own clock. Not part of equality.
    modified: float | None = field(default=None, compare=False)


class UnsupportedSchemeError(ValueError):
    """A URI whose ``scheme://`` no registered store handles (``gs://``, ``s3a://``, a typo)."""

    def __init__(self, uri: str, scheme: str, supported: Iterable[str]) -> None:
        self.uri = uri
        self.scheme = scheme
        self.supported = tuple(sorted(supported))
        super().__init__(
            f"unsupported URI scheme {scheme!r} in {uri!r}: supported schemes are "
            f"{', '.join(s + '://' for s in self.supported)} and plain local paths"
        )


class UnsupportedOperationError(ValueError):
    """The store behind a URI cannot do this operation (e.g. writing to ``https://``)."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object changed (``if_match``) or already exists (``if_none_match``)."""

    def __init__(self, uri: str, detail: str = "") -> None:
        self.uri = uri
        super().__init__(f"{uri}: precondition failed{': ' + detail if detail else ''}")


def normalize_suffixes(suffixes: Iterable[str] | None) -> tuple[str, ...] | None:
    """Lower-cased suffix tuple for :func:`has_suffix` (None: no filter)."""
    if suffixes is None:
        return None
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    return tuple(s.lower() for s in suffixes)


def has_suffix(name: str, suffixes: tuple[str, ...] | None) -> bool:
    return suffixes is None or name.lower().endswith(suffixes)


def is_hidden(relative: str) -> bool:
    """The one dotfile rule of every listing: skip an entry when its name, or a folder between the
    listed location and it, starts with ``.``.

    Such names are metadata and partial writes, not images (``.DS_Store``, ``._x.jpg``, ``.git/``,
    our own ``.tmp-`` files), and a local folder and the S3 prefix it was synced to must list the
    same inputs. ``relative`` is the path *below* the listed location, so a location that is itself
    hidden (``~/.cache/imgs/``) still lists; an input named exactly, or by a manifest, is always read.
    """
    return any(part.startswith(".") for part in relative.split("/"))


class Store(ABC):
    """One kind of location. Subclasses set :attr:`schemes` and implement the operations they support.

    Operations a store cannot do raise :class:`UnsupportedOperationError` (a
    ``ValueError``) naming the operation and the URI.
    """

    #: the URI schemes this store serves (``("s3",)``); ``file`` also serves plain paths
    schemes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_storage(cls, storage: "Storage") -> "Store":
        """Build the instance a :class:`~pipelines.io.storage.Storage` routes to (override to take settings)."""
        return cls()

    @classmethod
    @abstractmethod
    def parse(cls, uri: str) -> ParsedURI:
        """Split ``uri`` (whose scheme is one of :attr:`schemes`) into a :class:`ParsedURI`."""

    def _unsupported(self, operation: str, uri: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(f"{type(self).__name__} cannot {operation} {uri!r}")

    @classmethod
    def identity(cls, uri: str) -> str:
        """The one name of the input at ``uri``: every spelling of one object gives the same string.

        Planning keys rows, deduplicates and decides what is done by it (:func:`pipelines.io.uri.input_identity`),
        so two spellings of one file must never become two rows. Default: the URI as written.
        """
        return uri

    # ------------------------------------------------------------ reads
    @abstractmethod
    def read_object(self, uri: str) -> tuple[bytes, ObjectInfo]:
        """The whole object and what the read saw of it; raises :class:`InputError` (``not_found`` / ``download_failed``)."""

    def read_bytes(self, uri: str) -> bytes:
        return self.read_object(uri)[0]

    def stat(self, uri: str) -> ObjectInfo | None:
        """Size and etag of ``uri``, or None when it does not exist."""
        raise self._unsupported("stat", uri)

    def exists(self, uri: str) -> bool:
        return self.stat(uri) is not None

    def is_dir(self, uri: str) -> bool:
        """True for a directory / a prefix with at least one object below it."""
        return False

    def list_objects(
        self, prefix: str, suffixes: Iterable[str] | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Stream every object under ``prefix`` in sorted key order (:func:`is_hidden` entries skipped).

        When ``prefix`` names one object itself, that object is listed whatever
        its suffix (it was asked for by name).
        """
        raise self._unsupported("list", prefix)

    def list_children(self, prefix: str) -> Iterator[str]:
        """Names of the immediate sub-directories (sub-prefixes) of ``prefix``, sorted, streamed."""
        raise self._unsupported("list", prefix)

    # ------------------------------------------------------------ writes
    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write ``data`` so that readers see either nothing or the whole object."""
        raise self._unsupported("write to", uri)

    def upload_file(self, local_path: str, uri: str) -> None:
        """Copy a local file to ``uri`` atomically."""
        with open(local_path, "rb") as f:
            self.write_bytes(uri, f.read())

    def download_file(self, uri: str, local_path: str) -> None:
        """Copy the object at ``uri`` into a local file (atomically)."""
        from .local import atomic_write_local

        atomic_write_local(os.path.abspath(local_path), self.read_bytes(uri))

    def delete(self, uri: str) -> None:
        """Remove one object; a missing object is fine (deletes are idempotent)."""
        raise self._unsupported("delete", uri)

    def move(self, src: str, dst: str) -> None:
        """Put the object at ``src`` in place at ``dst`` (both in this store), replacing what was there."""
        raise self._unsupported("move", src)

    def arrow_filesystem(self, uri: str):
        """``(pyarrow.fs.FileSystem, path)`` for ``uri``."""
        raise self._unsupported("give an Arrow filesystem for", uri)

    def table_location(self, uri: str) -> tuple[str, dict[str, str]]:
        """``(table URI, storage_options)`` for a Delta table (delta-rs's object store) at ``uri``."""
        raise self._unsupported("hold a Delta table at", uri)

    # ------------------------------------------------------------ conditional writes (compare-and-swap)
    def read_for_update(self, uri: str) -> "tuple[bytes | None, str | None]":
        """``(data, etag)`` where the etag is the one :meth:`write_bytes_if` compares; ``(None, None)`` when absent."""
        raise self._unsupported("read for a conditional write", uri)

    def write_bytes_if(self, uri: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write ``data`` only when the object's etag is ``if_match`` and/or it does not exist yet
        (``if_none_match``); returns the new etag, raises :class:`PreconditionFailed` otherwise."""
        raise self._unsupported("write conditionally to", uri)
