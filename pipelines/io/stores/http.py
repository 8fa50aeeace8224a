"""Read-only ``http://`` and ``https://`` (inputs and model downloads); writes raise a clear error.

Failures follow the S3 store's rule (:func:`pipelines.io.stores.s3.s3_input_error`): what may pass
later (a host that is down, refused or timed-out connections, a body that breaks off, 5xx, 429) is
``download_failed`` with ``transient=True`` after the retries, so a batch run records it as
``retryable`` and is not complete; a 4xx answer is permanent (404 is ``not_found``).
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse, urlsplit, urlunsplit

from ..errors import InputError
from ..uri import ParsedURI
from .base import ObjectInfo, Store

HTTP_TIMEOUT_S = 30.0
HTTP_ATTEMPTS = 4
#: failures of the connection or the body, never of the request: worth trying again later
#: (``http.client.HTTPException`` covers a body cut short, ``IncompleteRead``)
_TRANSIENT_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpStore(Store):
    """GET with retries on 5xx / 429 / connection failures; 404 is ``not_found``, other 4xx ``download_failed``."""

    schemes = ("http", "https")

    def __init__(self, timeout_s: float = HTTP_TIMEOUT_S, attempts: int = HTTP_ATTEMPTS) -> None:
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)

    @classmethod
    def parse(cls, uri: str) -> ParsedURI:
        parsed = urlparse(uri)
        return ParsedURI(parsed.scheme.lower(), parsed.netloc, parsed.path)

    @classmethod
    def identity(cls, uri: str) -> str:
        """RFC 3986 normalisation that cannot change which resource is fetched: lower-case scheme and
        host, no default port, ``.``/``..`` segments removed, no fragment (it is never sent), ``/`` for
        an empty path. Query strings and ``//`` stay: a server may tell them apart."""
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
        if not colon or not port.isdigit():
            host, port = hostport, ""
        if port and int(port) == _DEFAULT_PORTS.get(scheme):
            port = ""
        netloc = f"{userinfo}{at}{host.lower()}{':' + port if port else ''}"
        return urlunsplit((scheme, netloc, _remove_dot_segments(parts.path) or "/", parts.query, ""))

    def _unsupported(self, operation: str, uri: str):
        err = super()._unsupported(operation, uri)
        err.args = (f"{err.args[0]}: http(s) locations are read-only (read_object / stat only)",)
        return err

    def _request(self, uri: str, method: str):
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                request = urllib.request.Request(uri, method=method)
                response = urllib.request.urlopen(request, timeout=self.timeout_s)
                return response
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise InputError(uri, "not_found", "HTTP 404") from None
                if exc.code < 500 and exc.code != 429:
                    raise InputError(uri, "download_failed", f"HTTP {exc.code}") from None
                last = exc
            except _TRANSIENT_ERRORS as exc:
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise self._still_failing(uri, last)

    def _still_failing(self, uri: str, last: Exception | None) -> InputError:
        """A 5xx / 429 / connection failure that outlasted the retries: transient, so the row is retryable."""
        detail = f"HTTP {last.code}" if isinstance(last, urllib.error.HTTPError) else f"{type(last).__name__}: {last}"
        return InputError(uri, "download_failed", f"{detail} (still failing after {self.attempts} attempts)", transient=True)

    def read_object(self, uri: str) -> tuple[bytes, ObjectInfo]:
        last: Exception | None = None
        for attempt in range(self.attempts):
            response = self._request(uri, "GET")
            try:
                with response:
                    data = response.read()
                    etag = (response.headers.get("ETag") or "").strip('"') or None
                return data, ObjectInfo(uri, len(data), etag)
            except _TRANSIENT_ERRORS as exc:  # body broke off
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise self._still_failing(uri, last)

    def stat(self, uri: str) -> ObjectInfo | None:
        """A HEAD request; None on 404. The size is -1 when the server sends no Content-Length."""
        try:
            response = self._request(uri, "HEAD")
        except InputError as exc:
            if exc.error_type == "not_found":
                return None
            raise
        with response:
            length = response.headers.get("Content-Length")
            etag = (response.headers.get("ETag") or "").strip('"') or None
        return ObjectInfo(uri, int(length) if length and length.isdigit() else -1, etag)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: ``/a/./b/../c`` -> ``/a/c`` (empty segments, ``//``, are kept)."""
    if "." not in path:
        return path
    segments = path.split("/")
    out: list[str] = []
    for segment in segments:
        if segment == ".":
            continue
        if segment == "..":
            if len(out) > 1:
                out.pop()
            continue
        out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/." names the folder "/a/b/"
    return "/".join(out)
