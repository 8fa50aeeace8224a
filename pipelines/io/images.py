"""Image decoding with the safety checks every pipeline relies on.

Bytes become an 8-bit, 3-channel BGR array (what PaddleX's ``ReadImage`` gives
its processors) or an :class:`InputError` that says why not:

- empty or unrecognised bytes, text named ``.jpg`` -> ``unsupported_format`` / ``decode_failed``
- a JPEG whose entropy-coded data never reaches its end marker (truncated) -> ``decode_failed``
  (OpenCV would silently return a half-grey picture)
- a header announcing more than ``max_pixels`` -> ``too_large``, checked before any pixel is decoded
- EXIF orientation is applied, 16-bit is scaled to 8-bit, grey/alpha/CMYK become BGR (OpenCV's IMREAD_COLOR).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError

DEFAULT_MAX_PIXELS = int(os.environ.get("PXFLOW_MAX_IMAGE_PIXELS", 20000 * 20000 // 2))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageHeader:
    """What the file header says before any pixel is decoded."""

    format: str
    width: int
    height: int


def probe_header(data: bytes, uri: str | None = None) -> ImageHeader:
    """Read format and size from the header only (Pillow's lazy open)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(uri, "decode_failed", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: we apply our own limit
            with Image.open(io.BytesIO(data)) as im:
                return ImageHeader(im.format or "unknown", int(im.width), int(im.height))
    except UnidentifiedImageError:
        raise InputError(uri, "unsupported_format", "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise InputError(uri, "too_large", str(exc)) from None
    except Exception as exc:
        raise InputError(uri, "decode_failed", f"unreadable image header: {exc}") from None


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


def decode_image(data: bytes, uri: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` to a uint8 BGR ``H x W x 3`` array or raise :class:`InputError`."""
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
