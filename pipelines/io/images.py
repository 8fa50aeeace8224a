"""Image decoding with the safety checks every pipeline relies on.

Bytes become an 8-bit, 3-channel BGR array (what PaddleX's ``ReadImage`` gives
its processors) or an :class:`InputError` that says why not:

- empty or unrecognised bytes, text named ``.jpg`` -> ``unsupported_format`` / ``decode_failed``
- a JPEG whose entropy-coded data never reaches its end marker (truncated) -> ``decode_failed``
  (OpenCV would silently return a half-grey picture)
- a header announcing more than ``max_pixels`` -> ``too_large``, checked before any pixel is decoded.
  The default is ``PXFLOW_MAX_IMAGE_PIXELS`` (200 M pixels unless set), read at each call, and it is the
  limit that applies: Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``, an error at
  twice its 89.5 M default) is not consulted when reading the header, and Pillow's global is never changed
- EXIF orientation is applied, 16-bit is scaled to 8-bit, grey/alpha/CMYK become BGR (OpenCV's IMREAD_COLOR).
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import InputError

#: the per-image limit when ``PXFLOW_MAX_IMAGE_PIXELS`` is not set (20000 x 10000)
BUILTIN_MAX_PIXELS = 20000 * 20000 // 2
#: the limit as the environment said at import (kept for callers that bind it as a default argument);
#: :func:`decode_image` reads :func:`max_image_pixels` at each call instead
DEFAULT_MAX_PIXELS = int(os.environ.get("PXFLOW_MAX_IMAGE_PIXELS") or BUILTIN_MAX_PIXELS)


def max_image_pixels() -> int:
    """The per-image pixel limit now: ``PXFLOW_MAX_IMAGE_PIXELS`` (read at each call) or 200 M."""
    value = os.environ.get("PXFLOW_MAX_IMAGE_PIXELS")
    if not value:
        return BUILTIN_MAX_PIXELS
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"PXFLOW_MAX_IMAGE_PIXELS must be an integer number of pixels, got {value!r}") from None
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageHeader:
    """What the file header says before any pixel is decoded."""

    format: str
    width: int
    height: int


# -- a hook around decoding: what the pipelines' pixel budget uses -------------------------------
_hooks = threading.local()


@contextmanager
def on_header(callback: Callable[[ImageHeader], None]) -> Iterator[None]:
    """Within this block, in this thread, :func:`decode_image` calls ``callback(header)`` once the header
    passed its checks and before any pixel is decoded (``predict()`` reserves its pixel budget there)."""
    previous = getattr(_hooks, "callback", None)
    _hooks.callback = callback
    try:
        yield
    finally:
        _hooks.callback = previous


def _open_header(data: bytes):
    """Pillow's lazy open without its decompression-bomb check (our own limit applies instead).

    Walks the format plug-ins the way ``Image.open`` does, so no global (``Image.MAX_IMAGE_PIXELS``,
    warning filters) is touched; falls back to ``Image.open`` if Pillow's internals ever change.
    """
    import struct

    from PIL import Image

    if not all(hasattr(Image, name) for name in ("OPEN", "ID", "preinit", "init")):  # pragma: no cover
        return Image.open(io.BytesIO(data))
    prefix = data[:16]
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            if fmt not in Image.OPEN:
                continue
            factory, accept = Image.OPEN[fmt]
            try:
                result = not accept or accept(prefix)
                if result and not isinstance(result, str):
                    return factory(io.BytesIO(data), "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    return None


def probe_header(data: bytes, uri: str | None = None) -> ImageHeader:
    """Read format and size from the header only (Pillow's lazy open, without Pillow's pixel limit)."""
    from PIL import Image

    if not data:
        raise InputError(uri, "decode_failed", "empty file (0 bytes)")
    try:
        im = _open_header(data)
    except Image.DecompressionBombError as exc:  # only on the fallback path
        raise InputError(uri, "too_large", str(exc)) from None
    except Exception as exc:
        raise InputError(uri, "decode_failed", f"unreadable image header: {exc}") from None
    if im is None:
        raise InputError(uri, "unsupported_format", "not a recognised image format")
    try:
        return ImageHeader(im.format or "unknown", int(im.width), int(im.height))
    finally:
        im.close()


def _jpeg_is_complete(data: bytes) -> bool:
    """True when the main image's scan data ends with an EOI marker.

    Walks marker segments from SOI up to the first SOS so an EOI inside an EXIF
    thumbnail (inside APP1) cannot be mistaken for the end of the main image.
    """
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return data.rfind(b"\xff\xd9", pos + 2 + length) != -1
        pos += 2 + length
    return False


def decode_image(data: bytes, uri: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``data`` to a uint8 BGR ``H x W x 3`` array or raise :class:`InputError`.

    ``max_pixels`` None: :func:`max_image_pixels` (``PXFLOW_MAX_IMAGE_PIXELS`` as set now).
    """
    if max_pixels is None:
        max_pixels = max_image_pixels()
    header = probe_header(data, uri)
    if header.width * header.height > max_pixels:
        raise InputError(
            uri,
            "too_large",
            f"{header.width}x{header.height} exceeds the {max_pixels}-pixel limit (PXFLOW_MAX_IMAGE_PIXELS)",
        )
    if header.format == "JPEG" and not _jpeg_is_complete(data):
        raise InputError(uri, "decode_failed", "truncated JPEG (no end-of-image marker after the scan data)")
    if header.format == "PNG" and b"IEND" not in data[-64:]:
        raise InputError(uri, "decode_failed", "truncated PNG (no IEND chunk)")
    callback = getattr(_hooks, "callback", None)
    if callback is not None:
        callback(header)
    # IMREAD_COLOR is what PaddleX's reader uses: it applies EXIF orientation and
    # converts grey, alpha, CMYK and 16-bit data to 8-bit BGR.
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(uri, "decode_failed", f"{header.format} data could not be decoded")
    return image


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded array (grey, BGRA, 16-bit, float) as contiguous uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def check_array(image: np.ndarray) -> np.ndarray:
    """Validate a caller-supplied array (PaddleX takes BGR ``H x W x 3`` uint8)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise InputError(None, "unsupported_format", f"expected an H x W x 3 BGR array, got {getattr(image, 'shape', type(image))}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise InputError(None, "unsupported_format", f"expected 1, 3 or 4 channels, got {image.shape[2]}")
    return to_bgr8(image)
