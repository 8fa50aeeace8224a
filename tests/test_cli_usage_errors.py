"""Bad S3 locations and bad index names end a ``pxflow`` command with one stderr line, exit 2, before any server.

Each command runs as the real console entry (``python -m pxflow.flows``) against the real S3 server
(weed mini): a bucket that does not exist, or the right access key with a wrong secret. The line must
name the cause and the fix; no traceback; and no Prefect server may have started (it would have
created its database under the command's own ``PREFECT_HOME``).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import ROOT, SHARED
from tests.support.cli import run_pxflow as _pxflow
from tests.support.cli import single_error_line as _the_one_line
from tests.support.s3_server import free_port

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


#: a generous bound, far above the seconds it takes (BENCHMARKS.md) and far below the 74 s it took before
UNREACHABLE_BOUND_S = 45


@pytest.mark.parametrize("where", ["s3-input", "local-input", "lake", "index"])
def test_an_unreachable_endpoint_is_one_line_naming_it_within_seconds(where, tmp_path, shared_dir):
    """``AWS_ENDPOINT_URL`` pointing at a closed port (a typo, a server that is down): exit 2 with one line that
    names the endpoint and the variable to fix, no Prefect server, and no minute of retries first (issue 19 #5)."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every connection is refused
    images = tmp_path / "images"
    images.mkdir()
    argv = {
        "s3-input": ["annotate", "--input", "s3://pxflow/in/", "--output", "s3://pxflow/out", "--model-dir",
                     str(PICODET_ONNX)],
        "local-input": _commands("s3://pxflow", tmp_path)["annotate"],
        "lake": _commands("s3://pxflow", tmp_path)["lake"],
        "index": _commands("s3://pxflow", tmp_path)["index"],
    }[where]
    started = time.monotonic()
    proc = _pxflow(tmp_path, *argv, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret")
    elapsed = time.monotonic() - started
    line = _the_one_line(proc, tmp_path)
    flag = "--input" if where == "s3-input" else FLAG[argv[0]]
    assert line.startswith(f"pxflow {argv[0]}") and f" {flag} s3://pxflow/" in line, line
    assert f"cannot reach the S3 endpoint {endpoint}; check AWS_ENDPOINT_URL" in line, line
    assert elapsed < UNREACHABLE_BOUND_S, f"{elapsed:.1f} s"


@pytest.mark.parametrize("name", ["../../etc", "x/y"])
def test_an_index_name_that_is_a_path_is_one_line(name, tmp_path, shared_dir):
    line = _the_one_line(_pxflow(tmp_path, *_index_build(str(tmp_path / "indexes"), name)), tmp_path)
    assert line.startswith("pxflow index build: --name: index name must match ")
    assert line.endswith(f"got {name!r}")
    assert not (tmp_path / "etc").exists() and not (tmp_path / "indexes").exists()
