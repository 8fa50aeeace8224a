"""SIGKILL the process running ``pxflow annotate`` after some shards committed, rerun: no loss, no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pxflow.flows.annotate import annotate
from pxflow.flows.options import AnnotateOptions
from tests.support.annotate_helpers import read_table
from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT

N_IMAGES = 30
SHARD_SIZE = 2  # 15 shards: the run is still going when the first ones commit


def _markers(output: Path) -> list[Path]:
    return sorted((output / "_commits").glob("run=*/*.json"))


@pytest.mark.slow
def test_killed_worker_then_rerun_gives_the_uninterrupted_rows(prefect_server, tmp_path, shared_dir):
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:N_IMAGES]:
        (src / path.name).symlink_to(path)
    params = dict(options=AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=SHARD_SIZE))

    killed_out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pxflow.flows", "annotate", "--input", str(src), "--output", str(killed_out),
           "--model_dir", str(PICODET_ONNX), "--threshold", "0.3", "--shard-size", str(SHARD_SIZE),
           "--workers", "1", "--no-progress"]
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while len(_markers(killed_out)) < 3:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    committed_at_kill = len(_markers(killed_out))
    assert proc.returncode == -signal.SIGKILL
    assert committed_at_kill < N_IMAGES // SHARD_SIZE, "the run finished before the kill; nothing was tested"

    resumed = annotate(input=str(src), output=str(killed_out), **params)
    assert resumed["complete"] and resumed["shards_skipped"] >= committed_at_kill
    assert resumed["shards_skipped"] < resumed["shards_planned"]

    clean_out = tmp_path / "clean"
    clean = annotate(input=str(src), output=str(clean_out), **params)
    assert clean["run_key"] == resumed["run_key"]

    for table in ("images", "objects"):
        killed_rows = read_table(str(killed_out / table)).to_pylist()
        clean_rows = read_table(str(clean_out / table)).to_pylist()
        assert len(killed_rows) == len(clean_rows), table
        key = (lambda r: r["image_uri"]) if table == "images" else (lambda r: (r["image_uri"], r["object_index"]))
        assert len({key(r) for r in killed_rows}) == len(killed_rows), f"duplicate {table} rows"
    killed_images = read_table(str(killed_out / "images")).to_pylist()
    assert len(killed_images) == N_IMAGES and {r["status"] for r in killed_images} == {"ok"}
    per_image = Counter(r["image_uri"] for r in read_table(str(killed_out / "objects")).to_pylist())
    clean_per_image = Counter(r["image_uri"] for r in read_table(str(clean_out / "objects")).to_pylist())
    assert per_image == clean_per_image
