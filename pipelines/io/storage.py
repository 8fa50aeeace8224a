"""One storage layer for local paths, ``file://``, ``s3://`` and read-only ``http(s)://``.

Model directories, inputs, Parquet outputs and indexes all go through these
functions, so every flow gets the same retries, the same atomic writes and the
same error vocabulary. S3 calls use boto3 (with its adaptive retry mode for
throttling and 5xx); Arrow-native writers get a ``pyarrow.fs`` filesystem for
the same location from :func:`arrow_filesystem`.

Configuration is the standard AWS one: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import InputError
from .uri import ParsedURI, parse_uri

HTTP_TIMEOUT_S = 30.0
HTTP_ATTEMPTS = 4
S3_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a stat knows about one object."""

    uri: str
    size: int
    etag: str | None = None


# ---------------------------------------------------------------- S3 clients

def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


_client_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def s3_client():
    """A boto3 S3 client for the current environment, shared across threads (boto3 clients are thread-safe)."""
    import boto3
    from botocore.config import Config

    key = (os.getpid(), _s3_endpoint(), _s3_region(), os.environ.get("AWS_ACCESS_KEY_ID"))
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=_s3_endpoint(),
                region_name=_s3_region(),
                config=Config(
                    retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "adaptive"},
                    max_pool_connections=32,
                    s3={"addressing_style": "path"} if _s3_endpoint() else None,
                ),
            )
            _clients[key] = client
        return client


def arrow_filesystem(uri: str):
    """``(pyarrow.fs.FileSystem, path)`` for ``uri``, for Arrow/Parquet readers and writers."""
    from pyarrow import fs

    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return fs.LocalFileSystem(), parsed.path
    if parsed.scheme == "s3":
        endpoint = _s3_endpoint()
        kwargs = {"region": _s3_region()}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs.update(
                access_key=os.environ["AWS_ACCESS_KEY_ID"],
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            )
        return fs.S3FileSystem(**kwargs), f"{parsed.bucket}/{parsed.path}"
    raise ValueError(f"no Arrow filesystem for {uri!r}")


def _s3_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


# ---------------------------------------------------------------- reads

def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``; raises :class:`InputError` (``not_found`` / ``download_failed``)."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        try:
            with open(parsed.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise InputError(uri, "not_found", "no such file") from None
        except IsADirectoryError:
            raise InputError(uri, "not_found", "is a directory, not a file") from None
        except OSError as exc:
            raise InputError(uri, "download_failed", f"cannot read: {exc}") from exc
    if parsed.scheme == "s3":
        return _s3_read(uri, parsed)
    return _http_read(uri)


def _s3_read(uri: str, parsed: ParsedURI) -> bytes:
    try:
        return s3_client().get_object(Bucket=parsed.bucket, Key=parsed.path)["Body"].read()
    except Exception as exc:  # botocore raises ClientError subclasses and connection errors
        code = _s3_error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
            raise InputError(uri, "not_found", f"no such object ({code})") from None
        raise InputError(uri, "download_failed", f"{type(exc).__name__}: {exc}") from exc


def _http_read(uri: str) -> bytes:
    last: Exception | None = None
    for attempt in range(HTTP_ATTEMPTS):
        try:
            with urllib.request.urlopen(uri, timeout=HTTP_TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise InputError(uri, "not_found", "HTTP 404") from None
            if exc.code < 500 and exc.code != 429:
                raise InputError(uri, "download_failed", f"HTTP {exc.code}") from None
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            last = exc
        if attempt + 1 < HTTP_ATTEMPTS:
            time.sleep(min(0.25 * 2**attempt, 4.0))
    raise InputError(uri, "download_failed", f"unreachable after {HTTP_ATTEMPTS} attempts: {last}")


def stat(uri: str) -> ObjectInfo | None:
    """Size and etag of ``uri``, or None when it does not exist."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        try:
            st = os.stat(parsed.path)
        except FileNotFoundError:
            return None
        return ObjectInfo(uri, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")
    if parsed.scheme == "s3":
        try:
            head = s3_client().head_object(Bucket=parsed.bucket, Key=parsed.path)
        except Exception as exc:
            if _s3_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(uri, int(head["ContentLength"]), head.get("ETag", "").strip('"') or None)
    raise ValueError(f"stat is not supported for {uri!r}")


def exists(uri: str) -> bool:
    """True when an object (or a local file or directory) exists at ``uri``."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return os.path.exists(parsed.path)
    return stat(uri) is not None


def is_dir(uri: str) -> bool:
    """True for a local directory, or an s3 prefix with at least one object below it."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return os.path.isdir(parsed.path)
    if parsed.scheme == "s3":
        prefix = parsed.path.rstrip("/") + "/" if parsed.path else ""
        page = s3_client().list_objects_v2(Bucket=parsed.bucket, Prefix=prefix, MaxKeys=1)
        return page.get("KeyCount", 0) > 0
    return False


# ---------------------------------------------------------------- listing

def _has_suffix(name: str, suffixes: tuple[str, ...] | None) -> bool:
    return suffixes is None or name.lower().endswith(suffixes)


def list_objects(prefix: str, suffixes: Iterable[str] | None = None) -> Iterator[ObjectInfo]:
    """Stream every object under ``prefix`` in sorted key order, optionally filtered by suffix.

    Nothing is held beyond one directory (local) or one 1000-key page (S3), so
    millions of keys list in constant memory. Hidden files and our own
    temporary files (``.tmp-``) are skipped.
    """
    sfx = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    parsed = parse_uri(prefix)
    if parsed.scheme == "file":
        yield from _list_local(parsed.path, sfx)
    elif parsed.scheme == "s3":
        key_prefix = parsed.path
        if key_prefix and not key_prefix.endswith("/") and is_dir(prefix):
            key_prefix += "/"
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=parsed.bucket, Prefix=key_prefix):
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if name.startswith(".") or not _has_suffix(name, sfx):
                    continue
                yield ObjectInfo(
                    f"s3://{parsed.bucket}/{item['Key']}", int(item["Size"]), item.get("ETag", "").strip('"') or None
                )
    else:
        raise ValueError(f"cannot list {prefix!r}")


def _list_local(root: str, suffixes: tuple[str, ...] | None) -> Iterator[ObjectInfo]:
    if os.path.isfile(root):
        st = os.stat(root)
        yield ObjectInfo(root, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=True):
            yield from _list_local(entry.path, suffixes)
        elif _has_suffix(entry.name, suffixes):
            st = entry.stat()
            yield ObjectInfo(entry.path, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")


# ---------------------------------------------------------------- writes

def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole object.

    Local: a temporary file in the same directory, fsync, then ``os.replace``.
    S3: a single PUT, which S3 publishes atomically.
    """
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        directory = os.path.dirname(parsed.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, parsed.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    if parsed.scheme == "s3":
        s3_client().put_object(Bucket=parsed.bucket, Key=parsed.path, Body=data)
        return
    raise ValueError(f"cannot write to {uri!r}")


def upload_file(local_path: str, uri: str) -> None:
    """Copy a local file to ``uri`` atomically (multipart upload for large S3 objects)."""
    parsed = parse_uri(uri)
    if parsed.scheme == "s3":
        s3_client().upload_file(local_path, parsed.bucket, parsed.path)
        return
    with open(local_path, "rb") as f:
        write_bytes(uri, f.read())


def download_file(uri: str, local_path: str) -> None:
    """Copy the object at ``uri`` into a local file (atomically)."""
    parsed = parse_uri(uri)
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    if parsed.scheme == "s3":
        tmp = f"{local_path}.tmp-{os.getpid()}"
        try:
            s3_client().download_file(parsed.bucket, parsed.path, tmp)
        except Exception as exc:
            if _s3_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise InputError(uri, "not_found", "no such object") from None
            raise
        os.replace(tmp, local_path)
        return
    write_bytes(local_path, read_bytes(uri))


def delete(uri: str) -> None:
    """Remove one object; missing objects are fine (deletes are idempotent)."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        try:
            os.unlink(parsed.path)
        except FileNotFoundError:
            pass
        return
    if parsed.scheme == "s3":
        s3_client().delete_object(Bucket=parsed.bucket, Key=parsed.path)
        return
    raise ValueError(f"cannot delete {uri!r}")
