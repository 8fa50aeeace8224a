"""SIGKILL a run at every commit-relevant point, rerun: the tables equal an uninterrupted run's, row for row.

Kills are real (``PXFLOW_KILL_AT``, :mod:`tests.support.faults`): the process dies with no
cleanup, as under the OOM killer. Also: a killed Dask worker process, and two ``annotate``
processes on the same input and output at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pxflow.flows.annotate import annotate
from pxflow.flows.options import AnnotateOptions
from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT
from tests.support.annotate_helpers import comparable_rows, read_table
from tests.support.faults import kill_env

N_IMAGES = 12
SHARD_SIZE = 3  # 4 shards


def _inputs(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("kill_in")
    for path in sorted((COCO_MINI / "images").iterdir())[:N_IMAGES]:
        (src / path.name).symlink_to(path)
    return src


def _options(**extra) -> AnnotateOptions:
    return AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=SHARD_SIZE, concurrency=1, **extra)


@pytest.fixture(scope="module")
def reference(prefect_server, tmp_path_factory, shared_dir):
    """The inputs and an uninterrupted run's tables."""
    src = _inputs(tmp_path_factory)
    out = tmp_path_factory.mktemp("kill_clean")
    assert annotate(input=str(src), output=str(out), options=_options())["complete"]
    return src, {t: comparable_rows(str(out / t)) for t in ("images", "objects")}


def _cli(src: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pxflow.flows", "annotate", "--input", str(src), "--output", str(out),
           "--model-dir", str(PICODET_ONNX), "--threshold", "0.3", "--shard-size", str(SHARD_SIZE),
           "--workers", "1", "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_plan", "after_infer:2", "after_objects_commit:2", "after_images_commit:3",
                                   "before_runs_row"])
def test_killed_anywhere_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, point):
    src, expected = reference
    out = tmp_path / "out"
    proc = _cli(src, out, kill_env(point))
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, log.decode(errors="replace")[-3000:]
    if (out / "images").exists():  # what survived the kill is whole shards only
        survived = read_table(str(out / "images")).num_rows
        assert survived % SHARD_SIZE == 0 and survived < N_IMAGES or point == "before_runs_row"
    resumed = annotate(input=str(src), output=str(out), options=_options())
    assert resumed["complete"]
    for table in ("images", "objects"):
        assert comparable_rows(str(out / table)) == expected[table], f"{table} differs after a kill at {point}"


@pytest.mark.slow
def test_a_killed_dask_worker_loses_and_duplicates_nothing(reference, tmp_path):
    src, expected = reference
    out = tmp_path / "out"
    env = kill_env("after_infer:1", once=tmp_path / "killed-once")
    proc = _cli(src, out, env, "--runner", "dask", "--workers", "2")
    log, _ = proc.communicate(timeout=600)
    text = log.decode(errors="replace")
    assert (tmp_path / "killed-once").exists(), text[-3000:]  # a worker process really died mid-shard
    if proc.returncode != 0:  # the shard was lost with its worker: the rerun finishes it
        assert annotate(input=str(src), output=str(out), options=_options())["complete"]
    for table in ("images", "objects"):
        assert comparable_rows(str(out / table)) == expected[table], table


@pytest.mark.slow
def test_two_annotate_processes_at_once_write_each_row_once(reference, tmp_path):
    src, expected = reference
    out = tmp_path / "out"
    procs = [_cli(src, out, {}) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert all(p.returncode in (0, 1) for p in procs), [log[-2000:] for log in logs]
    if any(p.returncode for p in procs):  # a loser that ran out of retries: a rerun finishes cleanly
        assert annotate(input=str(src), output=str(out), options=_options())["complete"]
    for table in ("images", "objects"):
        assert comparable_rows(str(out / table)) == expected[table], table
