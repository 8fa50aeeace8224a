"""``s3://bucket/key`` through boto3, for AWS and S3-compatible servers.

Settings are per store (:class:`S3Settings`); any field left None falls back
to the standard AWS environment (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``,
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), read at call time, then to
boto3's usual chain (``~/.aws/config``, profiles, instance roles). Two stores
with different settings work side by side in one process.

Errors: a missing key or bucket is ``not_found``; anything else that still
fails after the retries (throttling, 5xx, dropped connections, a body that
stops half way, access denied) is ``download_failed``, with ``transient=True``
when trying again later could succeed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Iterable, Iterator, Mapping

from ..errors import InputError
from ..uri import ParsedURI
from .base import ObjectInfo, PreconditionFailed, Store, has_suffix, is_hidden, normalize_suffixes

log = logging.getLogger(__name__)

#: botocore's per-request attempts (adaptive mode: throttling and 5xx)
S3_MAX_ATTEMPTS = 8
#: whole-read attempts on top of botocore's per-request retries: they cover what botocore does not
#: retry, a response body that breaks off while streaming.
S3_READ_ATTEMPTS = 3
#: seconds botocore waits for a TCP connection (its default, 60, times S3_MAX_ATTEMPTS is 8 minutes per call
#: against an endpoint that drops packets)
S3_CONNECT_TIMEOUT = 10.0
#: delta-rs (object_store) retry bounds for the tables: its defaults retry one request for up to 180 s; a
#: refused connection now fails in about a second, an outage within a minute (the shard's retries take over)
DELTA_RETRY_OPTIONS = {"max_retries": "10", "retry_timeout": "60s", "connect_timeout": "10s"}

#: S3 error codes meaning "there is no such object" (HEAD answers a bare 404).
S3_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
#: codes worth trying again: throttling and server-side failures (botocore's own retry set, plus 5xx).
S3_TRANSIENT = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
        "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
    }
)

#: the environment variables S3 settings fall back to (a default Storage is rebuilt when they change)
S3_ENV_VARS = (
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
)


@dataclass(frozen=True)
class S3Settings:
    """Explicit S3 settings; any field left None falls back to the AWS environment/config."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "S3Settings":
        """From a dict (e.g. a Prefect Secret block's JSON); keys that are not fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})

    @classmethod
    def coerce(cls, value: "S3Settings | Mapping[str, Any] | None") -> "S3Settings":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value)
        raise TypeError(f"S3 settings must be S3Settings, a dict or None, not {type(value).__name__}")

    def __repr__(self) -> str:  # never print secrets
        secret = "***" if self.secret_access_key else None
        token = "***" if self.session_token else None
        return (
            f"S3Settings(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"access_key_id={self.access_key_id!r}, secret_access_key={secret!r}, session_token={token!r})"
        )

    # -- resolved against the environment (at call time) ------------------------------------
    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")

    def resolved_region(self) -> str:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    def resolved_credentials(self) -> dict[str, str]:
        """Explicit credentials (these settings, else env vars); empty means boto3's default chain."""
        key = self.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
        if not key:
            return {}
        out = {"aws_access_key_id": key}
        secret = self.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        if secret:
            out["aws_secret_access_key"] = secret
        token = self.session_token or os.environ.get("AWS_SESSION_TOKEN")
        if token:
            out["aws_session_token"] = token
        return out


# A cache, not configuration: one client per (process, endpoint, region, credentials, retries).
_client_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def _epoch(stamp: Any) -> float | None:
    """botocore's ``LastModified`` (a datetime) as epoch seconds: the server's clock, not ours."""
    return stamp.timestamp() if stamp is not None and hasattr(stamp, "timestamp") else None


def s3_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def s3_is_transient(exc: BaseException) -> bool:
    """Could the same request succeed later? (No for 4xx answers such as AccessDenied.)"""
    code = s3_error_code(exc)
    if code:
        return code in S3_TRANSIENT or code.startswith("5")
    from botocore.exceptions import BotoCoreError

    # connection resets, read timeouts, incomplete bodies: BotoCoreError subclasses or OSErrors
    return isinstance(exc, (BotoCoreError, OSError))


def s3_input_error(uri: str, exc: BaseException) -> InputError:
    """Translate a boto3 failure into the pipeline error vocabulary."""
    code = s3_error_code(exc)
    if code in S3_NOT_FOUND:
        return InputError(uri, "not_found", f"no such object ({code})")
    transient = s3_is_transient(exc)
    detail = f"{code or type(exc).__name__}: {exc}"
    if transient:
        detail += " (still failing after retries)"
    return InputError(uri, "download_failed", detail, transient=transient)


class S3Store(Store):
    """S3 through boto3 (adaptive retries), with whole-read retries for bodies that break off."""

    schemes = ("s3",)

    def __init__(
        self,
        settings: S3Settings | Mapping[str, Any] | None = None,
        *,
        max_attempts: int | None = None,
        read_attempts: int | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.settings = S3Settings.coerce(settings)
        self.max_attempts = int(max_attempts if max_attempts is not None else S3_MAX_ATTEMPTS)
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else S3_CONNECT_TIMEOUT)
        self.read_attempts = max(1, int(read_attempts if read_attempts is not None else S3_READ_ATTEMPTS))

    @classmethod
    def from_storage(cls, storage) -> "S3Store":
        return cls(storage.s3, max_attempts=storage.s3_max_attempts, read_attempts=storage.s3_read_attempts)

    def __repr__(self) -> str:
        return f"S3Store({self.settings!r}, max_attempts={self.max_attempts}, read_attempts={self.read_attempts})"

    @classmethod
    def parse(cls, uri: str) -> ParsedURI:
        rest = uri.split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"s3 URI without a bucket: {uri!r}")
        return ParsedURI("s3", bucket, key)

    @classmethod
    def identity(cls, uri: str) -> str:
        """``s3://bucket/key`` (the scheme lower-cased); the key is kept byte for byte, since S3 keys
        are literal names: ``a//b.jpg`` and ``a/./b.jpg`` are other objects than ``a/b.jpg``."""
        parsed = cls.parse(uri)
        return f"s3://{parsed.bucket}/{parsed.path}"

    def client(self):
        """A boto3 S3 client for these settings, shared across threads (boto3 clients are thread-safe)."""
        import boto3
        from botocore.config import Config

        endpoint = self.settings.resolved_endpoint()
        region = self.settings.resolved_region()
        creds = self.settings.resolved_credentials()
        key = (os.getpid(), endpoint, region, tuple(sorted(creds.items())), self.max_attempts, self.connect_timeout)
        with _client_lock:
            client = _clients.get(key)
            if client is None:
                client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=endpoint,
                    region_name=region,
                    **creds,
                    config=Config(
                        retries={"max_attempts": self.max_attempts, "mode": "adaptive"},
                        connect_timeout=self.connect_timeout,
                        max_pool_connections=32,
                        s3={"addressing_style": "path"} if endpoint else None,
                    ),
                )
                _clients[key] = client
            return client

    # ------------------------------------------------------------ reads
    def read_object(self, uri: str) -> tuple[bytes, ObjectInfo]:
        parsed = self.parse(uri)
        last: BaseException | None = None
        for attempt in range(self.read_attempts):
            try:
                response = self.client().get_object(Bucket=parsed.bucket, Key=parsed.path)
                data = response["Body"].read()
                etag = str(response.get("ETag", "")).strip('"') or None
                return data, ObjectInfo(uri, len(data), etag)
            except Exception as exc:  # botocore raises ClientError subclasses and connection errors
                if not s3_is_transient(exc):
                    raise s3_input_error(uri, exc) from None
                last = exc
            if attempt + 1 < self.read_attempts:
                time.sleep(min(0.5 * 2**attempt, 4.0))
        assert last is not None
        raise s3_input_error(uri, last) from last

    def stat(self, uri: str) -> ObjectInfo | None:
        parsed = self.parse(uri)
        try:
            head = self.client().head_object(Bucket=parsed.bucket, Key=parsed.path)
        except Exception as exc:
            if s3_error_code(exc) in S3_NOT_FOUND:
                return None
            raise
        return ObjectInfo(uri, int(head["ContentLength"]), head.get("ETag", "").strip('"') or None, _epoch(head.get("LastModified")))

    def is_dir(self, uri: str) -> bool:
        parsed = self.parse(uri)
        prefix = parsed.path.rstrip("/") + "/" if parsed.path else ""
        page = self.client().list_objects_v2(Bucket=parsed.bucket, Prefix=prefix, MaxKeys=1)
        return page.get("KeyCount", 0) > 0

    # ------------------------------------------------------------ listing
    def list_objects(
        self, prefix: str, suffixes: Iterable[str] | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """One 1000-key page held at a time; ``s3://b/dir`` lists ``dir/`` when that prefix has objects."""
        sfx = normalize_suffixes(suffixes)
        parsed = self.parse(prefix)
        key_prefix = parsed.path
        if key_prefix and not key_prefix.endswith("/") and self.is_dir(prefix):
            key_prefix += "/"
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=parsed.bucket, Prefix=key_prefix, PaginationConfig={"PageSize": page_size})
        hidden = 0
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if not (key_prefix and key == key_prefix):  # an object named exactly is always listed
                    whole = not key_prefix or key_prefix.endswith("/")
                    below = key[len(key_prefix) :] if whole else key.rsplit("/", 1)[-1]
                    if not has_suffix(key, sfx):
                        continue
                    if is_hidden(below):  # the same rule as local folders
                        hidden += 1
                        continue
                yield ObjectInfo(f"s3://{parsed.bucket}/{key}", int(item["Size"]), item.get("ETag", "").strip('"') or None,
                                 _epoch(item.get("LastModified")))
        if hidden:
            log.warning("%s: skipped %d hidden object%s (names starting with '.')", prefix, hidden, "" if hidden == 1 else "s")

    def list_children(self, prefix: str) -> Iterator[str]:
        parsed = self.parse(prefix)
        key_prefix = parsed.path.rstrip("/") + "/" if parsed.path else ""
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=parsed.bucket, Prefix=key_prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(key_prefix) :].rstrip("/")
                if name and not is_hidden(name):
                    yield name

    # ------------------------------------------------------------ writes
    def write_bytes(self, uri: str, data: bytes) -> None:
        """A single PUT, which S3 publishes atomically."""
        parsed = self.parse(uri)
        self.client().put_object(Bucket=parsed.bucket, Key=parsed.path, Body=data)

    def upload_file(self, local_path: str, uri: str) -> None:
        """boto3's managed upload (multipart for large files; the object appears when complete)."""
        parsed = self.parse(uri)
        self.client().upload_file(local_path, parsed.bucket, parsed.path)

    def download_file(self, uri: str, local_path: str) -> None:
        parsed = self.parse(uri)
        os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
        tmp = f"{local_path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            self.client().download_file(parsed.bucket, parsed.path, tmp)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise s3_input_error(uri, exc) from None
        os.replace(tmp, local_path)

    def delete(self, uri: str) -> None:
        parsed = self.parse(uri)
        self.client().delete_object(Bucket=parsed.bucket, Key=parsed.path)

    def move(self, src: str, dst: str) -> None:
        """A server-side copy (the new object appears atomically when complete), then a delete of ``src``."""
        s, d = self.parse(src), self.parse(dst)
        if s.bucket != d.bucket:
            raise ValueError(f"move needs both locations in the same store: {src!r} -> {dst!r}")
        client = self.client()
        client.copy({"Bucket": s.bucket, "Key": s.path}, d.bucket, d.path)  # managed: multipart above 5 GB
        client.delete_object(Bucket=s.bucket, Key=s.path)

    def table_location(self, uri: str) -> tuple[str, dict[str, str]]:
        """delta-rs options from the same settings; commits use conditional puts (``If-None-Match``),
        so concurrent writers of one table never overwrite each other's log entries."""
        options = {"AWS_REGION": self.settings.resolved_region(), "conditional_put": "etag", **DELTA_RETRY_OPTIONS}
        endpoint = self.settings.resolved_endpoint()
        if endpoint:
            options["AWS_ENDPOINT_URL"] = endpoint
            options["AWS_ALLOW_HTTP"] = "true" if endpoint.startswith("http://") else "false"
            options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        creds = self.settings.resolved_credentials()
        for ours, theirs in (("aws_access_key_id", "AWS_ACCESS_KEY_ID"), ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                             ("aws_session_token", "AWS_SESSION_TOKEN")):
            if creds.get(ours):
                options[theirs] = creds[ours]
        return uri.rstrip("/"), options

    def arrow_filesystem(self, uri: str):
        from pyarrow import fs

        parsed = self.parse(uri)
        endpoint = self.settings.resolved_endpoint()
        kwargs: dict[str, Any] = {"region": self.settings.resolved_region()}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        creds = self.settings.resolved_credentials()
        if creds:
            kwargs.update(
                access_key=creds["aws_access_key_id"],
                secret_key=creds.get("aws_secret_access_key", ""),
                session_token=creds.get("aws_session_token"),
            )
        return fs.S3FileSystem(**kwargs), f"{parsed.bucket}/{parsed.path}"

    # ------------------------------------------------------------ conditional writes (compare-and-swap)
    def read_for_update(self, uri: str) -> "tuple[bytes | None, str | None]":
        """The object and its ETag, one GET (``(None, None)`` when absent)."""
        try:
            data, info = self.read_object(uri)
        except InputError as exc:
            if exc.error_type == "not_found":
                return None, None
            raise
        return data, info.etag

    def write_bytes_if(self, uri: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """``put_object`` with ``IfMatch`` / ``IfNoneMatch="*"``; HTTP 412 (or 409, a concurrent
        conditional write) is :class:`PreconditionFailed`."""
        parsed = self.parse(uri)
        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs["IfMatch"] = if_match if if_match.startswith('"') else f'"{if_match}"'
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self.client().put_object(Bucket=parsed.bucket, Key=parsed.path, Body=data, **kwargs)
        except Exception as exc:
            code = s3_error_code(exc)
            status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in S3_PRECONDITION or status in (409, 412):
                raise PreconditionFailed(uri, code or str(status)) from None
            raise
        return str(response.get("ETag", "")).strip('"')


#: S3 answers to a lost conditional write (412; 409 when another conditional write is in flight)
S3_PRECONDITION = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
