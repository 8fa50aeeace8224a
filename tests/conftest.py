"""Shared test fixtures: where ../shared lives, and the rule for when it is missing.

Real-model tests use ``../shared/models`` and ``../shared/data``. They skip
with a clear reason only when ``../shared`` is absent on a developer machine;
under CI (``CI=true``) a missing ``../shared`` is an error, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tests.support.prefect_server import prefect_server  # noqa: E402,F401  (session fixture: ephemeral Prefect API)
from tests.support.s3_server import s3_server  # noqa: E402,F401  (session fixture: real S3 server, weed mini)

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared")).resolve()
PICODET_PADDLE = SHARED / "models" / "PicoDet-XS_coco_infer"
PICODET_ONNX = SHARED / "models" / "PicoDet-XS_coco_onnx"
LEGACY_MODEL = SHARED / "models" / "PP-YOLO-tiny_4class_legacy_infer"
COCO_MINI = SHARED / "data" / "coco_val_mini"
DRINK = SHARED / "data" / "drink_dataset_v1.0"


def require_shared(*needed: Path) -> Path:
    """Return ../shared, or skip (developer machine) / fail (CI) when it, or any of ``needed``
    inside it (a model or data folder added later than the others), is absent."""
    missing = [p for p in (SHARED, *needed) if not Path(p).exists()]
    if not missing:
        return SHARED
    if os.environ.get("CI"):
        pytest.fail(f"CI needs ../shared beside the clone with {missing[0]} (looked at {SHARED})")
    pytest.skip(f"{missing[0]} not found: real-model tests need ../shared with it")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()
