"""Read-only ``http://`` and ``https://`` (inputs and model downloads); writes raise a clear error."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from ..errors import InputError
from ..uri import ParsedURI
from .base import ObjectInfo, Store

HTTP_TIMEOUT_S = 30.0
HTTP_ATTEMPTS = 4


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
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise InputError(uri, "download_failed", f"unreachable after {self.attempts} attempts: {last}")

    def read_object(self, uri: str) -> tuple[bytes, ObjectInfo]:
        last: Exception | None = None
        for attempt in range(self.attempts):
            response = self._request(uri, "GET")
            try:
                with response:
                    data = response.read()
                    etag = (response.headers.get("ETag") or "").strip('"') or None
                return data, ObjectInfo(uri, len(data), etag)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:  # body broke off
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise InputError(uri, "download_failed", f"unreachable after {self.attempts} attempts: {last}")

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
