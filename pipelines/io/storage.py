"""One storage layer for local paths, ``file://``, ``s3://`` and read-only ``http(s)://``.

Model directories, inputs, Parquet outputs and indexes all go through these
functions, so every flow gets the same retries, the same atomic writes and the
same error vocabulary. S3 calls use boto3 (with its adaptive retry mode for
throttling and 5xx); Arrow-native writers get a ``pyarrow.fs`` filesystem for
the same location from :func:`arrow_filesystem`.

Configuration is the standard AWS one: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers,
plus boto3's usual chain (``~/.aws/config``, profiles, instance roles).
:func:`configure_s3` overrides them for this process (flows use it to apply
settings kept in a Prefect block).

Errors use the vocabulary of :mod:`pipelines.io.errors`: a missing key or
bucket is ``not_found``; anything else that still fails after the retries
(throttling, 5xx, dropped connections, a body that stops half way, access
denied) is ``download_failed``, with ``transient=True`` when trying again later
could succeed, so a batch job can retry the shard instead of recording a
permanent failure.
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

@dataclass(frozen=True)
class S3Settings:
    """Explicit S3 settings; any field left None falls back to the AWS environment/config."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


_settings = S3Settings()


def configure_s3(settings: S3Settings | dict | None) -> None:
    """Use ``settings`` for every S3 client of this process (None restores the environment)."""
    global _settings
    if isinstance(settings, dict):
        settings = S3Settings(**{k: v for k, v in settings.items() if k in S3Settings.__dataclass_fields__})
    _settings = settings or S3Settings()


def _s3_endpoint() -> str | None:
    return _settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_region() -> str:
    return _settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _s3_credentials() -> dict[str, str]:
    """Explicit credentials (configure_s3, else env vars); empty means boto3's default chain."""
    key = _settings.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
    if not key:
        return {}
    out = {"aws_access_key_id": key}
    secret = _settings.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if secret:
        out["aws_secret_access_key"] = secret
    token = _settings.session_token or os.environ.get("AWS_SESSION_TOKEN")
    if token:
        out["aws_session_token"] = token
    return out


_client_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def s3_client():
    """A boto3 S3 client for the current environment, shared across threads (boto3 clients are thread-safe)."""
    import boto3
    from botocore.config import Config

    creds = _s3_credentials()
    key = (os.getpid(), _s3_endpoint(), _s3_region(), tuple(sorted(creds.items())))
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=_s3_endpoint(),
                region_name=_s3_region(),
                **creds,
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
        creds = _s3_credentials()
        if creds:
            kwargs.update(
                access_key=creds["aws_access_key_id"],
                secret_key=creds.get("aws_secret_access_key", ""),
                session_token=creds.get("aws_session_token"),
            )
        return fs.S3FileSystem(**kwargs), f"{parsed.bucket}/{parsed.path}"
    raise ValueError(f"no Arrow filesystem for {uri!r}")


def _s3_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


#: S3 error codes meaning "there is no such object" (HEAD answers a bare 404).
S3_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
#: codes worth trying again: throttling and server-side failures (botocore's own retry set, plus 5xx).
S3_TRANSIENT = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
        "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
    }
)
#: whole-read attempts on top of botocore's per-request retries: they cover what botocore does not
#: retry, a response body that breaks off while streaming.
S3_READ_ATTEMPTS = 3


def _s3_is_transient(exc: BaseException) -> bool:
    """Could the same request succeed later? (No for 4xx answers such as AccessDenied.)"""
    code = _s3_error_code(exc)
    if code:
        return code in S3_TRANSIENT or code.startswith("5")
    from botocore.exceptions import BotoCoreError

    # connection resets, read timeouts, incomplete bodies: BotoCoreError subclasses or OSErrors
    return isinstance(exc, (BotoCoreError, OSError))


def _s3_input_error(uri: str, exc: BaseException) -> InputError:
    """Translate a boto3 failure into the pipeline error vocabulary."""
    code = _s3_error_code(exc)
    if code in S3_NOT_FOUND:
        return InputError(uri, "not_found", f"no such object ({code})")
    transient = _s3_is_transient(exc)
    detail = f"{code or type(exc).__name__}: {exc}"
    if transient:
        detail += " (still failing after retries)"
    return InputError(uri, "download_failed", detail, transient=transient)


# ---------------------------------------------------------------- reads

def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``; raises :class:`InputError` (``not_found`` / ``download_failed``)."""
    return read_object(uri)[0]


def read_object(uri: str) -> tuple[bytes, ObjectInfo]:
    """The whole object and what the read saw of it (size, etag), in one request."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        try:
            with open(parsed.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            raise InputError(uri, "not_found", "no such file") from None
        except IsADirectoryError:
            raise InputError(uri, "not_found", "is a directory, not a file") from None
        except OSError as exc:
            raise InputError(uri, "download_failed", f"cannot read: {exc}") from exc
        return data, ObjectInfo(uri, len(data), _local_etag(st))
    if parsed.scheme == "s3":
        return _s3_read(uri, parsed)
    data = _http_read(uri)
    return data, ObjectInfo(uri, len(data), None)


def _local_etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


def _s3_read(uri: str, parsed: ParsedURI) -> tuple[bytes, ObjectInfo]:
    last: BaseException | None = None
    for attempt in range(S3_READ_ATTEMPTS):
        try:
            response = s3_client().get_object(Bucket=parsed.bucket, Key=parsed.path)
            data = response["Body"].read()
            etag = str(response.get("ETag", "")).strip('"') or None
            return data, ObjectInfo(uri, len(data), etag)
        except Exception as exc:  # botocore raises ClientError subclasses and connection errors
            if not _s3_is_transient(exc):
                raise _s3_input_error(uri, exc) from None
            last = exc
        if attempt + 1 < S3_READ_ATTEMPTS:
            time.sleep(min(0.5 * 2**attempt, 4.0))
    assert last is not None
    raise _s3_input_error(uri, last) from last


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
        return ObjectInfo(uri, st.st_size, _local_etag(st))
    if parsed.scheme == "s3":
        try:
            head = s3_client().head_object(Bucket=parsed.bucket, Key=parsed.path)
        except Exception as exc:
            if _s3_error_code(exc) in S3_NOT_FOUND:
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


def list_objects(prefix: str, suffixes: Iterable[str] | None = None, page_size: int = 1000) -> Iterator[ObjectInfo]:
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
        pages = paginator.paginate(Bucket=parsed.bucket, Prefix=key_prefix, PaginationConfig={"PageSize": page_size})
        for page in pages:
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
        yield ObjectInfo(root, st.st_size, _local_etag(st))
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
            yield ObjectInfo(entry.path, st.st_size, _local_etag(st))


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
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _s3_input_error(uri, exc) from None
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


def move(src: str, dst: str) -> None:
    """Put the object at ``src`` in place at ``dst`` (same store), replacing what was there.

    Readers of ``dst`` see the old object or the whole new one, never a part:
    locally an ``os.replace`` (atomic rename), on S3 a server-side copy (the
    new object appears atomically when the copy completes) then a delete of
    ``src``. This is how outputs are published: write to a temporary key, move.
    """
    s, d = parse_uri(src), parse_uri(dst)
    if s.scheme != d.scheme or (s.scheme == "s3" and s.bucket != d.bucket):
        raise ValueError(f"move needs both locations in the same store: {src!r} -> {dst!r}")
    if s.scheme == "file":
        os.makedirs(os.path.dirname(d.path), exist_ok=True)
        os.replace(s.path, d.path)
        return
    if s.scheme == "s3":
        client = s3_client()
        client.copy({"Bucket": s.bucket, "Key": s.path}, d.bucket, d.path)  # managed: multipart above 5 GB
        client.delete_object(Bucket=s.bucket, Key=s.path)
        return
    raise ValueError(f"cannot move {src!r}")


def list_children(prefix: str) -> Iterator[str]:
    """Names of the immediate sub-directories (sub-prefixes) of ``prefix``, sorted, streamed.

    Used to walk Hive partitions (``dt=2024-01-01/``) without listing every key below them.
    """
    parsed = parse_uri(prefix)
    if parsed.scheme == "file":
        try:
            entries = sorted(e.name for e in os.scandir(parsed.path) if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return
        yield from entries
        return
    if parsed.scheme == "s3":
        key_prefix = parsed.path.rstrip("/") + "/" if parsed.path else ""
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=parsed.bucket, Prefix=key_prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(key_prefix) :].rstrip("/")
                if name and not name.startswith("."):
                    yield name
        return
    raise ValueError(f"cannot list {prefix!r}")
