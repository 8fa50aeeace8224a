"""Local files: plain paths and ``file://`` URIs."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import tempfile
from typing import Iterable, Iterator
from urllib.parse import quote, unquote_to_bytes, urlparse

from ..errors import InputError
from ..uri import ParsedURI
from .base import ObjectInfo, PreconditionFailed, Store, has_suffix, is_hidden, normalize_suffixes

log = logging.getLogger(__name__)


def local_etag(st: os.stat_result) -> str:
    """A cheap change detector for a local file: mtime and size."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


def atomic_write_local(path: str, data: bytes) -> None:
    """A temporary file in the same directory, fsync, then ``os.replace``."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalStore(Store):
    """The local filesystem. ``ObjectInfo.uri`` of listed entries are plain absolute paths."""

    schemes = ("file",)

    @classmethod
    def parse(cls, uri: str) -> ParsedURI:
        text = uri
        if text[:7].lower() == "file://":
            # percent-escapes are bytes: ``%E9`` names the Latin-1 file its identity came from
            text = os.fsdecode(unquote_to_bytes(urlparse(text).path))
        return ParsedURI("file", "", os.path.abspath(os.path.expanduser(text)))

    @classmethod
    def identity(cls, uri: str) -> str:
        """The resolved real path: ``/./``, ``//``, ``file://`` and symlinks (to files or folders) name one file once.

        A link that cannot be resolved (dangling, a loop) keeps its own name in its real folder, so it
        still gets its one (error) row. A path that is not valid UTF-8 becomes a ``file://`` URI with
        its bytes percent-escaped: readable again (:meth:`parse`), and never equal to another file's
        identity, since every other local identity is a plain path and escapes are unambiguous.
        """
        path = real_path(cls.parse(uri).path)
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return "file://" + quote(os.fsencode(path), safe="/")
        return path

    def _path(self, uri: str) -> str:
        return self.parse(os.fspath(uri)).path

    # ------------------------------------------------------------ reads
    def read_object(self, uri: str) -> tuple[bytes, ObjectInfo]:
        try:
            with open(self._path(uri), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            path = self._path(uri)
            if os.path.islink(path):
                raise InputError(uri, "not_found", f"dangling symbolic link (to {os.readlink(path)!r})") from None
            raise InputError(uri, "not_found", "no such file") from None
        except IsADirectoryError:
            raise InputError(uri, "not_found", "is a directory, not a file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(uri, "not_found", "symbolic link loop") from None
            raise InputError(uri, "download_failed", f"cannot read: {exc}") from exc
        return data, ObjectInfo(uri, len(data), local_etag(st))

    def stat(self, uri: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(uri))
        except FileNotFoundError:  # a dangling symlink included
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink loop: nothing there either
                return None
            raise
        return ObjectInfo(uri, st.st_size, local_etag(st), st.st_mtime)

    def exists(self, uri: str) -> bool:
        return os.path.exists(self._path(uri))

    def is_dir(self, uri: str) -> bool:
        return os.path.isdir(self._path(uri))

    # ------------------------------------------------------------ listing
    def list_objects(
        self, prefix: str, suffixes: Iterable[str] | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Recursive, sorted by name at each level, one directory held at a time.

        Every entry with a matching name is listed once, readable or not: a dangling symlink,
        a symlink loop or an entry that cannot be stat'ed is listed (size -1, no etag) so that
        reading it gives its error row, with a warning here. A folder is walked once per real
        directory (a folder symlink loop is not followed). Names that are not valid UTF-8 are
        listed (surrogate-escaped, as ``os`` gives them). Hidden entries follow :func:`is_hidden`.
        """
        root = self._path(prefix)
        if os.path.isfile(root):
            st = os.stat(root)
            yield ObjectInfo(root, st.st_size, local_etag(st), st.st_mtime)
            return
        hidden = [0]
        yield from self._walk(root, "", normalize_suffixes(suffixes), set(), hidden)
        if hidden[0]:
            log.warning("%s: skipped %d hidden entr%s (names starting with '.')", ascii(root), hidden[0],
                        "y" if hidden[0] == 1 else "ies")

    def _walk(
        self, directory: str, relative: str, suffixes: tuple[str, ...] | None, visited: set[str], hidden: list[int]
    ) -> Iterator[ObjectInfo]:
        try:
            real = os.path.realpath(directory)
        except OSError as exc:
            log.warning("skipping %s: %s", ascii(directory), exc)
            return
        if real in visited:
            log.warning("skipping %s: already listed as %s (symlink loop or duplicate link)", ascii(directory), ascii(real))
            return
        visited.add(real)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            return
        except OSError as exc:  # permission denied, not a directory, I/O error
            log.warning("skipping directory %s: %s", ascii(directory), exc)
            return
        for entry in entries:
            below = f"{relative}{entry.name}"
            if is_hidden(below):
                hidden[0] += 1
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:  # a symlink loop: not a folder we can walk; listed below if its name matches
                is_dir = False
            if is_dir:
                yield from self._walk(entry.path, f"{below}/", suffixes, visited, hidden)
                continue
            if not has_suffix(entry.name, suffixes):
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:  # dangling symlink, loop, permission denied, vanished meanwhile
                log.warning("listing %s although it cannot be read (its row says why): %s", ascii(entry.path), exc)
                yield ObjectInfo(entry.path, -1, None)
                continue
            yield ObjectInfo(entry.path, st.st_size, local_etag(st), st.st_mtime)

    def list_children(self, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(self._path(prefix)) as it:
                names = []
                for e in it:
                    try:
                        if e.is_dir() and not is_hidden(e.name):
                            names.append(e.name)
                    except OSError as exc:
                        log.warning("skipping %s: %s", ascii(e.path), exc)
        except FileNotFoundError:
            return
        yield from sorted(names)

    # ------------------------------------------------------------ writes
    def write_bytes(self, uri: str, data: bytes) -> None:
        atomic_write_local(self._path(uri), data)

    def download_file(self, uri: str, local_path: str) -> None:
        atomic_write_local(os.path.abspath(local_path), self.read_bytes(uri))

    def delete(self, uri: str) -> None:
        try:
            os.unlink(self._path(uri))
        except FileNotFoundError:
            pass

    def move(self, src: str, dst: str) -> None:
        """An ``os.replace``: readers of ``dst`` see the old file or the whole new one."""
        s, d = self._path(src), self._path(dst)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        os.replace(s, d)

    def arrow_filesystem(self, uri: str):
        from pyarrow import fs

        return fs.LocalFileSystem(), self._path(uri)

    def table_location(self, uri: str) -> tuple[str, dict[str, str]]:
        return self._path(uri), {}

    # ------------------------------------------------------------ conditional writes (compare-and-swap)
    def read_for_update(self, uri: str) -> "tuple[bytes | None, str | None]":
        """The file and the md5 of its content (the etag :meth:`write_bytes_if` compares; mtimes can tie)."""
        try:
            with open(self._path(uri), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return data, content_etag(data)

    def write_bytes_if(self, uri: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Under an exclusive ``fcntl.flock`` on a ``.<name>.lock`` file beside the target: compare the
        current content's md5 with ``if_match`` (or check absence), then write atomically (temp + rename)."""
        path = self._path(uri)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        lock_path = os.path.join(directory, f".{os.path.basename(path)}.lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    with open(path, "rb") as f:
                        current: str | None = content_etag(f.read())
                except FileNotFoundError:
                    current = None
                if if_none_match and current is not None:
                    raise PreconditionFailed(uri, "already exists")
                if if_match is not None and current != if_match:
                    raise PreconditionFailed(uri, f"etag is {current}, expected {if_match}")
                atomic_write_local(path, data)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return content_etag(data)


def real_path(path: str) -> str:
    """``path`` with every symlink resolved; a link that does not resolve (dangling, a loop) is kept
    by its own name in its parent's real folder (the one thing that identifies it)."""
    try:
        return os.path.realpath(path, strict=True)
    except OSError:
        head, tail = os.path.split(path)
        return os.path.join(os.path.realpath(head), tail)


def content_etag(data: bytes) -> str:
    """The md5 of ``data`` (what S3 gives a single-part PUT), used as the compare-and-swap etag of local files."""
    return hashlib.md5(data).hexdigest()
