"""Image decoding: every kind of bad or unusual input gets a clear error or a correct BGR array."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.images import decode_image


def _jpeg(img_bgr: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img_bgr[:, :, ::-1]).save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _marked_image() -> np.ndarray:
    """80x40 (w x h) image, white block in the top-left corner."""
    img = np.zeros((40, 80, 3), np.uint8)
    img[:10, :20] = 255
    return img


def _error(data: bytes) -> InputError:
    with pytest.raises(InputError) as info:
        decode_image(data, "mem://x")
    assert "mem://x" in str(info.value)
    return info.value


def test_empty_file():
    assert _error(b"").error_type == "decode_failed"


def test_text_named_as_image():
    assert _error(b"this is not an image at all\n" * 3).error_type == "unsupported_format"


def test_truncated_jpeg_is_rejected_not_half_grey():
    data = _jpeg(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    assert decode_image(data).shape == (256, 256, 3)
    err = _error(data[: len(data) * 2 // 3])
    assert err.error_type == "decode_failed" and "truncated" in err.message


def test_truncated_png():
    ok, buf = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert _error(buf.tobytes()[:-30]).error_type == "decode_failed"


def test_decompression_bomb_header_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width/height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    assert _error(bytes(data)).error_type == "too_large"


def test_sixteen_bit_png_becomes_8bit():
    img16 = np.full((5, 7, 3), 65535, np.uint16)
    img16[0, 0] = 0
    ok, buf = cv2.imencode(".png", img16)
    out = decode_image(buf.tobytes())
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    assert out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_grayscale_rgba_and_cmyk_become_bgr():
    gray = io.BytesIO()
    Image.fromarray(np.full((6, 9), 200, np.uint8), "L").save(gray, "PNG")
    assert decode_image(gray.getvalue())[0, 0].tolist() == [200, 200, 200]
    rgba = io.BytesIO()
    Image.fromarray(np.dstack([np.full((6, 9), v, np.uint8) for v in (10, 20, 30, 40)]), "RGBA").save(rgba, "PNG")
    assert decode_image(rgba.getvalue())[0, 0].tolist() == [30, 20, 10]  # RGB(10,20,30) as BGR
    cmyk = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), (255, 0, 0), np.uint8), "RGB").convert("CMYK").save(cmyk, "JPEG", quality=100)
    b, g, r = decode_image(cmyk.getvalue())[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60  # still red


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    out = decode_image(_jpeg(_marked_image(), exif=exif.tobytes()))
    assert out.shape == (80, 40, 3)
    # the white block from the top-left ends up top-right after a clockwise rotation
    assert out[:20, -10:].mean() > 200 and out[:20, :10].mean() < 50
