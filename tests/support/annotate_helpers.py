"""Helpers for the bulk-annotation tests: the bad-input set, uploads, reading outputs, COCO mAP."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pxflow.pipelines.io import storage


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A syntactically valid PNG announcing ``width x height`` with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def bad_inputs(real_jpeg: bytes) -> dict[str, tuple[bytes, str, str | None, tuple[int, int] | None]]:
    """name -> (bytes, expected status, expected error_type, expected (width, height) when ok)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)

    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 16), (10, 200, 30, 0)).save(cmyk, "JPEG")
    exif = io.BytesIO()
    rotated = Image.fromarray(colour[:, :, ::-1].copy())  # stored 40 wide x 24 high
    tags = Image.Exif()
    tags[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display -> 24 wide x 40 high
    rotated.save(exif, "JPEG", exif=tags.tobytes())
    return {
        "zero_bytes.jpg": (b"", "error", "decode_failed", None),
        "truncated.jpg": (real_jpeg[: len(real_jpeg) // 2], "error", "decode_failed", None),
        "text_named.png": (b"this is a text file, not a picture\n", "error", "unsupported_format", None),
        "bomb_30000x30000.png": (_png_header_only(30000, 30000), "error", "too_large", None),
        "deep16.png": (cv2.imencode(".png", (colour.astype(np.uint16) * 257))[1].tobytes(), "ok", None, (40, 24)),
        "cmyk.jpg": (cmyk.getvalue(), "ok", None, (32, 16)),
        "grayscale.jpg": (_jpeg(colour[:, :, 0]), "ok", None, (40, 24)),
        "rgba.png": (cv2.imencode(".png", np.dstack([colour, np.full((24, 40), 128, np.uint8)]))[1].tobytes(), "ok", None, (40, 24)),
        "exif_rotated.jpg": (exif.getvalue(), "ok", None, (24, 40)),
    }


def upload_dir(local_dir: Path, prefix: str, limit: int | None = None) -> list[str]:
    uris = []
    for path in sorted(local_dir.iterdir())[:limit]:
        uri = f"{prefix.rstrip('/')}/{path.name}"
        storage.upload_file(str(path), uri)
        uris.append(uri)
    return uris


def read_table(uri: str, version: int | None = None):
    """The current snapshot (or ``version``) of a Delta table (``images``/``objects``/``runs``), local or s3."""
    from deltalake import DeltaTable

    location, options = storage.default_storage().table_location(uri)
    return DeltaTable(location, version=version, storage_options=options).to_pyarrow_table()


VOLATILE = ("annotated_at", "flow_run_id", "shard_id", "download_ms", "decode_ms")


def comparable_rows(uri: str) -> list[tuple]:
    """A table's rows without what differs between equivalent runs (timings, run ids, shard ids), sorted."""
    table = read_table(uri)
    keep = [n for n in table.column_names if n not in VOLATILE]
    rows = table.select(keep).to_pylist()
    return sorted(tuple((k, r[k]) for k in keep) for r in rows)


def coco_bbox_map(objects: list[dict[str, Any]], annotations: Path) -> float:
    """bbox mAP@[.5:.95] of ``objects`` rows, computed as everywhere else (:mod:`pipelines.evaluation`)."""
    from collections import defaultdict

    from pxflow.pipelines.evaluation import coco_eval, detections_from_boxes, load_coco

    boxes_by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in objects:
        boxes_by_image[r["image_uri"]].append(
            {"cls_id": r["cls_id"], "score": r["score"], "coordinate": [r["x1"], r["y1"], r["x2"], r["y2"]]}
        )
    coco = load_coco(str(annotations))
    return float(coco_eval(coco, detections_from_boxes(boxes_by_image.items(), coco))[0])


def read_json(uri: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(uri))
