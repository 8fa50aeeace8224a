"""Session-wide PP-ShiTuV2 test assets: generated models and the drink gallery's features.

The models are built by ``scripts/build_test_models_shitu.py`` (in a subprocess, so the
test process never enters Paddle's dynamic-graph mode) into a temporary directory; the
~1000 gallery features take a while on 2 cores, so they are computed once per session
(module-level cache: both ShiTu test modules import these fixtures) and reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DRINK, ROOT, require_shared

_cache: dict[str, object] = {}


def build_models() -> dict[str, str]:
    if "models" not in _cache:
        out = tempfile.mkdtemp(prefix="pxflow-shitu-models-")
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_test_models_shitu.py"), out],
            check=True,
            capture_output=True,
        )
        _cache["models"] = {"det": os.path.join(out, "PP-ShiTuV2_det"), "rec": os.path.join(out, "PP-ShiTuV2_rec")}
    return _cache["models"]  # type: ignore[return-value]


def make_pipeline(**config):
    from pxflow.pipelines.registry import create_pipeline

    models = build_models()
    base = {
        "SubModules": {
            "Detection": {"model_dir": models["det"]},
            "Recognition": {"model_dir": models["rec"]},
        }
    }
    base.update(config)
    return create_pipeline("PP-ShiTuV2", config=base)


@pytest.fixture(scope="session")
def shitu_models() -> dict[str, str]:
    return build_models()


@pytest.fixture(scope="session")
def shitu_pipeline():
    if "pipeline" not in _cache:
        _cache["pipeline"] = make_pipeline()
    return _cache["pipeline"]


@pytest.fixture(scope="session")
def drink_gallery(shitu_pipeline):
    """``(features, labels, skipped)`` of ../shared's drink gallery, computed once."""
    require_shared()
    if "drink" not in _cache:
        gallery = Path(DRINK) / "gallery"
        _cache["drink"] = shitu_pipeline.embed_gallery(str(gallery), str(gallery / "drink_label.txt"))
    features, labels, skipped = _cache["drink"]  # type: ignore[misc]
    return np.asarray(features), list(labels), list(skipped)
