"""Session fixtures: the small segmentation models of ``scripts/build_test_models_seg.py`` and the standard
SAM ONNX pair of ``scripts/build_test_models_sam.py``, built once per run.

The fixture is imported by several test modules; the build is cached here so
it happens once per session however many modules import it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_BUILT: dict[str, str] = {}
_BUILT_SAM: dict[str, str] = {}


def build_script(name: str = "build_test_models_seg"):
    """A build script of ``scripts/`` as a module (``scripts/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def seg_models(tmp_path_factory) -> dict[str, str]:
    if not _BUILT:
        _BUILT.update(build_script().build_all(str(tmp_path_factory.mktemp("seg_models")), onnx=True))
    return dict(_BUILT)


@pytest.fixture(scope="session")
def standard_sam(tmp_path_factory) -> dict[str, str]:
    """Standard-interface SAM directories (``encoder/`` + ``decoder/``): ``standard``, plus the error variants
    ``unexpected`` (a decoder pxflow cannot drive) and ``failing`` (loads, then fails on every call)."""
    if not _BUILT_SAM:
        script, root = build_script("build_test_models_sam"), tmp_path_factory.mktemp("sam_standard")
        _BUILT_SAM.update({kind: script.build_standard_sam(str(root / kind), kind) for kind in ("standard", "unexpected", "failing")})
    return dict(_BUILT_SAM)


@pytest.fixture(scope="session")
def seg_images(tmp_path_factory) -> dict[str, str]:
    """Three textured JPEGs of different sizes and a corrupt one."""
    d = tmp_path_factory.mktemp("seg_images")
    rng = np.random.default_rng(3)
    out = {}
    for name, (h, w) in {"a": (120, 200), "b": (90, 60), "c": (150, 150)}.items():
        path = os.path.join(d, f"{name}.jpg")
        cv2.imwrite(path, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        out[name] = path
    bad = os.path.join(d, "zz_bad.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    out["bad"] = bad
    out["dir"] = str(d)
    return out
