"""Production limits of ``pxflow serve``: body size, image bytes and pixels, URL fetching without SSRF.

``image`` fields are a URL (``http://`` / ``https://``) the server fetches, or the file's
bytes in base64 (a ``data:...;base64,`` prefix is accepted). A URL's host is resolved
*before* connecting and every address it resolves to must be public: private, loopback,
link-local, multicast, reserved and unspecified addresses are refused unless
``allow_fetch_from`` lists them (CIDRs such as ``10.0.0.0/8`` or host names). The connection
then goes to the address that was checked (the ``Host`` header and TLS SNI keep the name),
so a DNS answer that changes between the check and the connect cannot redirect it, and
redirects are followed by hand (at most 3), each re-checked. Fetches have a connect/read
timeout and a byte limit; decoding goes through :func:`pxflow.pipelines.io.images.decode_image`
with the server's pixel limit (a decompression bomb is refused from its header).

Memory per request is capped before any work: ``topk`` (``max_topk``), the SAM prompt count
(``max_prompts``) and the pixels of the request's images, read from their headers
(``max_request_pixels``); what requests decode together is bounded by the process's pixel
budget (``max_pixels_in_flight``, :mod:`.admission`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

import numpy as np

from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.images import decode_image, max_image_pixels, probe_header
from pxflow.pipelines.prefetch import DEFAULT_MAX_PIXELS_IN_FLIGHT, max_pixels_in_flight
from pxflow.pipelines.serving import ServingError


#: a request the server refuses: ``status`` (4xx/5xx) and a message for ``errorMsg``; the same class
#: pipelines' serving handlers raise, so the app maps both to the envelope in one place
ApiError = ServingError


@dataclass
class Limits:
    #: request bodies above this many bytes are refused with 413
    max_body_bytes: int = 32 * 1024 * 1024
    #: decoded images above this many pixels are refused with 413 (checked from the header)
    max_image_pixels: int = field(default_factory=max_image_pixels)
    #: bytes one fetched URL may return
    max_fetch_bytes: int = 32 * 1024 * 1024
    #: seconds: connect and each read of a URL fetch; the whole fetch gets 2x
    fetch_timeout_s: float = 10.0
    #: seconds a request may wait for its inference (queue + model) before 504
    request_timeout_s: float = 60.0
    #: requests waiting for a model before new ones get 503
    max_queue: int = 256
    #: CIDRs / host names that may be fetched even when private or loopback
    allow_fetch_from: Sequence[str] = ()
    #: images per imageLabelPairs request (index build/add)
    max_pairs: int = 1024
    #: largest ``topk`` of /shitu-infer (faiss allocates queries x topk results whatever the index holds)
    max_topk: int = 1000
    #: most prompts in one /open-vocabulary-segmentation request (each one is a full-image mask)
    max_prompts: int = 256
    #: decoded pixels of one request, summed over its images (read from the headers); None: the in-flight budget
    max_request_pixels: int | None = None
    #: the process's pixel budget, in decoded-BGR pixels (3 bytes), shared by queued requests and ``predict()``;
    #: the same number as ``PXFLOW_MAX_PIXELS_IN_FLIGHT`` (``pxflow serve --max-pixels-in-flight`` sets both)
    max_pixels_in_flight: int = field(default_factory=lambda: max_pixels_in_flight() or DEFAULT_MAX_PIXELS_IN_FLIGHT)
    #: seconds a request waits for room in the pixel budget before 503
    admission_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_topk", "max_prompts", "max_pixels_in_flight"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_request_pixels is None:
            self.max_request_pixels = self.max_pixels_in_flight
        if not 1 <= self.max_request_pixels <= self.max_pixels_in_flight:
            raise ValueError(f"max_request_pixels ({self.max_request_pixels}) must be between 1 and "
                             f"max_pixels_in_flight ({self.max_pixels_in_flight}): a larger request could never be admitted")
        if self.admission_timeout_s < 0:
            raise ValueError(f"admission_timeout_s must be >= 0, got {self.admission_timeout_s}")
        self._nets = []
        self._hosts = set()
        for entry in self.allow_fetch_from or ():
            text = str(entry).strip()
            if not text:
                continue
            try:
                self._nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self._hosts.add(text.lower().rstrip("."))

    @property
    def max_concurrency(self) -> int:
        """Requests the server handles at once (uvicorn's ``limit_concurrency``; more get 503 from uvicorn)."""
        return max(64, int(self.max_queue) + 32)

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self._hosts

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if any(ip in net for net in self._nets):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                    or ip.is_unspecified or not ip.is_global)


def is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def decode_base64(text: str, limits: Limits) -> bytes:
    head = text[:64]
    if head.startswith("data:") and ";base64," in head:
        text = text.split(",", 1)[1]
    if len(text) * 3 // 4 > limits.max_body_bytes:
        raise ApiError(413, f"image: the base64 content exceeds {limits.max_body_bytes} bytes")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, f"image: neither an http(s) URL nor valid base64 ({exc})") from None
    if not data:
        raise ApiError(422, "image: empty (0 bytes)")
    return data


async def resolve_checked(host: str, port: int, limits: Limits) -> str:
    """The first address of ``host`` after checking that every address it resolves to may be fetched."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ApiError(422, f"image: cannot resolve host {host!r} ({exc})") from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise ApiError(422, f"image: host {host!r} has no address")
    if not limits.host_allowed(host):
        refused = [a for a in addresses if not limits.address_allowed(a)]
        if refused:
            raise ApiError(
                403,
                f"image: refusing to fetch from {host!r}: it resolves to a non-public address ({refused[0]}); "
                "start the server with --allow-fetch-from to permit it",
            )
    return addresses[0]


async def fetch_url(url: str, limits: Limits, client) -> bytes:
    """GET ``url`` (an ``httpx.AsyncClient`` without redirects), SSRF-checked, size- and time-limited."""
    import httpx

    for _ in range(4):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(422, f"image: not an http(s) URL with a host: {url[:200]!r}")
        if parts.username or parts.password:
            raise ApiError(422, "image: URLs with credentials are not fetched")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await resolve_checked(host, port, limits)
        netloc_ip = f"[{address}]" if ":" in address else address
        target = urlunsplit((parts.scheme, f"{netloc_ip}:{port}", parts.path or "/", parts.query, ""))
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            async with asyncio.timeout(2 * limits.fetch_timeout_s):
                request = client.build_request("GET", target, headers={"Host": host_header}, extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("location"):
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ApiError(422, f"image: fetching the URL answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > limits.max_fetch_bytes:
                        raise ApiError(413, f"image: the URL's content ({declared} bytes) exceeds {limits.max_fetch_bytes} bytes")
                    chunks, total = [], 0
                    async for chunk in response.aiter_bytes():
                        total += len(chunk)
                        if total > limits.max_fetch_bytes:
                            raise ApiError(413, f"image: the URL's content exceeds {limits.max_fetch_bytes} bytes")
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise ApiError(504, f"image: fetching the URL took longer than its timeout ({limits.fetch_timeout_s:g} s per "
                                f"connect/read, {2 * limits.fetch_timeout_s:g} s in all)") from None
        except httpx.HTTPError as exc:
            raise ApiError(422, f"image: cannot fetch the URL ({type(exc).__name__}: {exc})") from None
        data = b"".join(chunks)
        if not data:
            raise ApiError(422, "image: the URL returned 0 bytes")
        return data
    raise ApiError(422, "image: too many redirects")


def image_pixels(data: bytes, limits: Limits, what: str = "image") -> int:
    """Width x height from the header alone (nothing decoded); 413 above the per-image limit, 422 unreadable."""
    try:
        header = probe_header(data)
    except InputError as exc:
        raise ApiError(413 if exc.error_type == "too_large" else 422, f"{what}: {exc.error_type}: {exc.message}") from None
    pixels = header.width * header.height
    if pixels > limits.max_image_pixels:
        raise ApiError(413, f"{what}: too_large: {header.width}x{header.height} exceeds the {limits.max_image_pixels}-pixel "
                            "limit per image (--max-image-pixels)")
    return pixels


def decode_checked(data: bytes, limits: Limits, what: str = "image") -> np.ndarray:
    """Bytes -> BGR array through pxflow's decoder; :class:`ApiError` 413/422 on a bad or oversized image."""
    try:
        return decode_image(data, uri=None, max_pixels=limits.max_image_pixels)
    except InputError as exc:
        status = 413 if exc.error_type == "too_large" else 422
        raise ApiError(status, f"{what}: {exc.error_type}: {exc.message}") from None
    except Exception as exc:  # a decoder failure pxflow did not classify
        raise ApiError(422, f"{what}: decode_failed: {type(exc).__name__}: {exc}") from None


async def image_bytes(value, limits: Limits, client, what: str = "image") -> bytes:
    """The file bytes of a request's ``image`` field (URL fetched, or base64 decoded); nothing decoded yet."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{what}: required (an http(s) URL or base64 file content)")
    value = value.strip()
    return await fetch_url(value, limits, client) if is_url(value) else decode_base64(value, limits)
