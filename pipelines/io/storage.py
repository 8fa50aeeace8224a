"""One storage layer for local paths, ``file://``, ``s3://`` and read-only ``http(s)://``.

Model directories, inputs, Parquet outputs and indexes all go through a
:class:`Storage`, so every flow gets the same retries, the same atomic writes
and the same error vocabulary. A ``Storage`` is a small context object built
from settings and routes each call to the :class:`~pipelines.io.stores.Store`
registered for the URI's scheme (:class:`LocalStore`, :class:`S3Store`,
:class:`HttpStore`; :func:`register_store` adds more). Settings travel with
the object, never through process-global state, so two ``Storage`` objects
with different S3 credentials work side by side::

    store = Storage(s3={"endpoint_url": "http://minio:9000", "access_key_id": "...", "secret_access_key": "..."})
    data, info = store.read_object("s3://bucket/images/a.jpg")

The module-level functions (``storage.read_bytes(uri)`` ...) use
:func:`default_storage`: S3 settings from the standard AWS environment
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), then
boto3's usual chain (``~/.aws/config``, profiles, instance roles).

Errors use the vocabulary of :mod:`pipelines.io.errors`: a missing key or
bucket is ``not_found``; anything else that still fails after the retries
(throttling, 5xx, dropped connections, a body that stops half way, access
denied) is ``download_failed``, with ``transient=True`` when trying again later
could succeed, so a batch job can retry the shard instead of recording a
permanent failure. A URI with an unknown scheme raises
:class:`UnsupportedSchemeError` (a ``ValueError``) naming the supported ones.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable, Iterator, Mapping

from .stores import (
    HttpStore,
    LocalStore,
    ObjectInfo,
    PreconditionFailed,
    S3Settings,
    S3Store,
    Store,
    UnsupportedOperationError,
    UnsupportedSchemeError,
    register_store,
    store_class,
    supported_schemes,
)
from .stores.http import HTTP_ATTEMPTS, HTTP_TIMEOUT_S
from .stores import s3 as _s3
from .stores.s3 import S3_ENV_VARS, S3_NOT_FOUND, S3_TRANSIENT
from .uri import ParsedURI, parse_uri, uri_scheme

#: defaults for new Storage objects (read when a Storage is built, so tests may lower them)
S3_MAX_ATTEMPTS = _s3.S3_MAX_ATTEMPTS
S3_READ_ATTEMPTS = _s3.S3_READ_ATTEMPTS

__all__ = [
    "HTTP_ATTEMPTS", "HTTP_TIMEOUT_S", "S3_MAX_ATTEMPTS", "S3_NOT_FOUND", "S3_READ_ATTEMPTS", "S3_TRANSIENT",
    "HttpStore", "LocalStore", "ObjectInfo", "ParsedURI", "PreconditionFailed", "S3Settings", "S3Store", "Storage", "Store",
    "UnsupportedOperationError", "UnsupportedSchemeError", "arrow_filesystem", "default_storage", "delete",
    "download_file", "exists", "is_dir", "list_children", "list_objects", "move", "parse_uri", "read_bytes",
    "read_object", "register_store", "stat", "supported_schemes", "upload_file", "write_bytes",
]


class Storage:
    """Routes each URI to the store for its scheme; holds the settings those stores use.

    ``s3``: :class:`S3Settings`, a dict of its fields (unknown keys ignored, so a
    Prefect Secret block's JSON can be passed as is) or None; fields left None
    fall back to the AWS environment. ``stores``: store instances by scheme,
    overriding or adding to the registered ones (e.g. ``{"s3": S3Store(...)}``).
    ``s3_max_attempts`` / ``s3_read_attempts``: botocore's per-request attempts and
    our whole-read attempts (default: this module's ``S3_MAX_ATTEMPTS`` /
    ``S3_READ_ATTEMPTS`` at construction time).

    Thread-safe; picklable (stores are rebuilt lazily on the other side).
    """

    def __init__(
        self,
        s3: S3Settings | Mapping[str, Any] | None = None,
        *,
        stores: Mapping[str, Store] | None = None,
        s3_max_attempts: int | None = None,
        s3_read_attempts: int | None = None,
    ) -> None:
        self.s3 = S3Settings.coerce(s3)
        self.s3_max_attempts = S3_MAX_ATTEMPTS if s3_max_attempts is None else int(s3_max_attempts)
        self.s3_read_attempts = S3_READ_ATTEMPTS if s3_read_attempts is None else int(s3_read_attempts)
        self._explicit: dict[str, Store] = {k.lower(): v for k, v in (stores or {}).items()}
        self._lock = threading.Lock()
        self._stores: dict[type, Store] = {}

    def __repr__(self) -> str:
        return f"Storage(s3={self.s3!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        state["_stores"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ routing
    def store_for(self, uri: str | os.PathLike) -> Store:
        """The store serving ``uri``; :class:`UnsupportedSchemeError` for an unknown scheme."""
        text = os.fspath(uri)
        scheme = uri_scheme(text)
        explicit = self._explicit.get(scheme)
        if explicit is not None:
            return explicit
        cls = store_class(scheme, text)
        store = self._stores.get(cls)
        if store is None:
            with self._lock:
                store = self._stores.get(cls)
                if store is None:
                    store = self._stores[cls] = cls.from_storage(self)
        return store

    def parse(self, uri: str | os.PathLike) -> ParsedURI:
        text = os.fspath(uri)
        return type(self.store_for(text)).parse(text)

    # ------------------------------------------------------------ reads
    def read_bytes(self, uri: str) -> bytes:
        """The whole object at ``uri``; raises :class:`InputError` (``not_found`` / ``download_failed``)."""
        return self.store_for(uri).read_object(os.fspath(uri))[0]

    def read_object(self, uri: str) -> tuple[bytes, ObjectInfo]:
        """The whole object and what the read saw of it (size, etag), in one request."""
        return self.store_for(uri).read_object(os.fspath(uri))

    def stat(self, uri: str) -> ObjectInfo | None:
        """Size and etag of ``uri``, or None when it does not exist."""
        return self.store_for(uri).stat(os.fspath(uri))

    def exists(self, uri: str) -> bool:
        """True when an object (or a local file or directory) exists at ``uri``."""
        return self.store_for(uri).exists(os.fspath(uri))

    def is_dir(self, uri: str) -> bool:
        """True for a local directory, or an s3 prefix with at least one object below it."""
        return self.store_for(uri).is_dir(os.fspath(uri))

    # ------------------------------------------------------------ listing
    def list_objects(
        self, prefix: str, suffixes: Iterable[str] | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Stream every object under ``prefix`` in sorted key order, optionally filtered by suffix.

        Nothing is held beyond one directory (local) or one 1000-key page (S3), so
        millions of keys list in constant memory. One dotfile rule for local folders and
        S3 prefixes alike (:func:`~pipelines.io.stores.base.is_hidden`): entries below
        ``prefix`` with a name or folder starting with ``.`` (our own ``.tmp-`` files
        included) are skipped, and counted in a warning. A local entry that cannot be read
        (dangling symlink, loop) is still listed, so that it gets its error row. A prefix
        that lists nothing (missing directory, empty s3 prefix) yields nothing.
        """
        return self.store_for(prefix).list_objects(os.fspath(prefix), suffixes, page_size)

    def list_children(self, prefix: str) -> Iterator[str]:
        """Names of the immediate sub-directories (sub-prefixes) of ``prefix``, sorted, streamed.

        Used to walk Hive partitions (``dt=2024-01-01/``) without listing every key below them.
        """
        return self.store_for(prefix).list_children(os.fspath(prefix))

    # ------------------------------------------------------------ writes
    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write ``data`` so that readers see either nothing or the whole object.

        Local: a temporary file in the same directory, fsync, then ``os.replace``.
        S3: a single PUT, which S3 publishes atomically.
        """
        self.store_for(uri).write_bytes(os.fspath(uri), data)

    def upload_file(self, local_path: str, uri: str) -> None:
        """Copy a local file to ``uri`` atomically (multipart upload for large S3 objects)."""
        self.store_for(uri).upload_file(os.fspath(local_path), os.fspath(uri))

    def download_file(self, uri: str, local_path: str) -> None:
        """Copy the object at ``uri`` into a local file (atomically)."""
        self.store_for(uri).download_file(os.fspath(uri), os.fspath(local_path))

    def delete(self, uri: str) -> None:
        """Remove one object; missing objects are fine (deletes are idempotent)."""
        self.store_for(uri).delete(os.fspath(uri))

    def move(self, src: str, dst: str) -> None:
        """Put the object at ``src`` in place at ``dst`` (same store), replacing what was there.

        Readers of ``dst`` see the old object or the whole new one, never a part:
        locally an ``os.replace`` (atomic rename), on S3 a server-side copy (the
        new object appears atomically when the copy completes) then a delete of
        ``src``. This is how outputs are published: write to a temporary key, move.
        """
        source, target = self.store_for(src), self.store_for(dst)
        if source is not target:
            raise ValueError(f"move needs both locations in the same store: {src!r} -> {dst!r}")
        source.move(os.fspath(src), os.fspath(dst))

    def read_for_update(self, uri: str) -> "tuple[bytes | None, str | None]":
        """``(data, etag)`` of ``uri`` for a later :meth:`write_bytes_if` (``(None, None)`` when absent).

        The etag is the one the store compares: S3's ETag; locally the md5 of the content.
        """
        return self.store_for(uri).read_for_update(os.fspath(uri))

    def write_bytes_if(self, uri: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Compare-and-swap: write ``data`` only when ``uri``'s etag is still ``if_match`` and/or
        (``if_none_match``) nothing exists there yet; returns the new etag.

        Raises :class:`PreconditionFailed` when another writer got there first. S3: a
        conditional ``PutObject`` (``If-Match`` / ``If-None-Match: *``). Local: an exclusive
        ``fcntl.flock`` on a lock file beside the target, then temp file + rename.
        """
        return self.store_for(uri).write_bytes_if(os.fspath(uri), data, if_match=if_match, if_none_match=if_none_match)

    def arrow_filesystem(self, uri: str):
        """``(pyarrow.fs.FileSystem, path)`` for ``uri``, for Arrow/Parquet readers and writers."""
        return self.store_for(uri).arrow_filesystem(os.fspath(uri))

    def table_location(self, uri: str) -> tuple[str, dict[str, str]]:
        """``(table URI, storage_options)`` for a Delta table at ``uri`` (deltalake / Polars / DuckDB readers)."""
        return self.store_for(uri).table_location(os.fspath(uri))


# ---------------------------------------------------------------- the default Storage

_default_lock = threading.Lock()
_default: tuple[tuple, Storage] | None = None


def default_storage() -> Storage:
    """A :class:`Storage` with S3 settings from the AWS environment.

    Rebuilt whenever those environment variables (or this module's attempt
    defaults) change, so a process that sets ``AWS_*`` after import still gets them.
    """
    global _default
    key = (tuple(os.environ.get(name) for name in S3_ENV_VARS), S3_MAX_ATTEMPTS, S3_READ_ATTEMPTS)
    current = _default
    if current is not None and current[0] == key:
        return current[1]
    with _default_lock:
        if _default is None or _default[0] != key:
            _default = (key, Storage())
        return _default[1]


def read_bytes(uri: str) -> bytes:
    """:meth:`Storage.read_bytes` on :func:`default_storage`."""
    return default_storage().read_bytes(uri)


def read_object(uri: str) -> tuple[bytes, ObjectInfo]:
    """:meth:`Storage.read_object` on :func:`default_storage`."""
    return default_storage().read_object(uri)


def stat(uri: str) -> ObjectInfo | None:
    """:meth:`Storage.stat` on :func:`default_storage`."""
    return default_storage().stat(uri)


def exists(uri: str) -> bool:
    """:meth:`Storage.exists` on :func:`default_storage`."""
    return default_storage().exists(uri)


def is_dir(uri: str) -> bool:
    """:meth:`Storage.is_dir` on :func:`default_storage`."""
    return default_storage().is_dir(uri)


def list_objects(prefix: str, suffixes: Iterable[str] | None = None, page_size: int = 1000) -> Iterator[ObjectInfo]:
    """:meth:`Storage.list_objects` on :func:`default_storage`."""
    return default_storage().list_objects(prefix, suffixes, page_size)


def list_children(prefix: str) -> Iterator[str]:
    """:meth:`Storage.list_children` on :func:`default_storage`."""
    return default_storage().list_children(prefix)


def write_bytes(uri: str, data: bytes) -> None:
    """:meth:`Storage.write_bytes` on :func:`default_storage`."""
    default_storage().write_bytes(uri, data)


def upload_file(local_path: str, uri: str) -> None:
    """:meth:`Storage.upload_file` on :func:`default_storage`."""
    default_storage().upload_file(local_path, uri)


def download_file(uri: str, local_path: str) -> None:
    """:meth:`Storage.download_file` on :func:`default_storage`."""
    default_storage().download_file(uri, local_path)


def delete(uri: str) -> None:
    """:meth:`Storage.delete` on :func:`default_storage`."""
    default_storage().delete(uri)


def move(src: str, dst: str) -> None:
    """:meth:`Storage.move` on :func:`default_storage`."""
    default_storage().move(src, dst)


def arrow_filesystem(uri: str):
    """:meth:`Storage.arrow_filesystem` on :func:`default_storage`."""
    return default_storage().arrow_filesystem(uri)
