"""Bad S3 locations and bad index names end a ``pxflow`` command with one stderr line, exit 2, before any server.

Each command runs as the real console entry (``python -m pxflow.flows``) against the real S3 server
(weed mini): a bucket that does not exist, or the right access key with a wrong secret. The line must
name the cause and the fix; no traceback; and no Prefect server may have started (it would have
created its database under the command's own ``PREFECT_HOME``).
"""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, SHARED
from tests.support.cli import run_pxflow as _pxflow
from tests.support.cli import single_error_line as _the_one_line

EMBEDDING = SHARED / "models" / "MobileNetV1_embedding_coral"
PICODET_ONNX = SHARED / "models" / "PicoDet-XS_coco_onnx"
MISSING_BUCKET = "pxflow-no-such-bucket"


def _index_build(root: str, name: str = "drinks") -> list[str]:
    return ["index", "build", "--root", root, "--name", name, "--gallery", str(ROOT / "no-gallery.txt"),
            "--rec_model_dir", str(EMBEDDING), "--index_type", "Flat"]


def _commands(where: str, tmp_path) -> dict[str, list[str]]:
    """The commands whose output (or index root) is ``where``."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    return {
        "index": _index_build(f"{where}/indexes"),
        "lake": ["lake", "optimize", "--output", f"{where}/out"],
        "annotate": ["annotate", "--input", str(images), "--output", f"{where}/out", "--model-dir", str(PICODET_ONNX)],
    }


FLAG = {"index": "--root", "lake": "--output", "annotate": "--output"}


@pytest.mark.parametrize("command", ["index", "lake", "annotate"])
def test_a_missing_bucket_is_one_line_naming_the_bucket(command, s3_server, tmp_path, shared_dir):
    line = _the_one_line(_pxflow(tmp_path, *_commands(f"s3://{MISSING_BUCKET}/x", tmp_path)[command]), tmp_path)
    assert line.startswith(f"pxflow {command}")
    assert f"{FLAG[command]} s3://{MISSING_BUCKET}/x/" in line
    assert f"the bucket '{MISSING_BUCKET}' does not exist on {s3_server.endpoint}; create it, or fix the bucket name" in line


@pytest.mark.parametrize("command", ["index", "lake", "annotate"])
def test_a_wrong_secret_key_is_one_line_naming_the_variable(command, s3_server, tmp_path, shared_dir):
    where = s3_server.unique_prefix("wrong-secret")
    proc = _pxflow(tmp_path, *_commands(where, tmp_path)[command], AWS_SECRET_ACCESS_KEY="not-the-secret")
    line = _the_one_line(proc, tmp_path)
    assert f"{FLAG[command]} {where}/" in line
    assert "the S3 server rejected the secret key (SignatureDoesNotMatch); check AWS_SECRET_ACCESS_KEY" in line


@pytest.mark.parametrize("name", ["../../etc", "x/y"])
def test_an_index_name_that_is_a_path_is_one_line(name, tmp_path, shared_dir):
    line = _the_one_line(_pxflow(tmp_path, *_index_build(str(tmp_path / "indexes"), name)), tmp_path)
    assert line.startswith("pxflow index build: --name: index name must match ")
    assert line.endswith(f"got {name!r}")
    assert not (tmp_path / "etc").exists() and not (tmp_path / "indexes").exists()
