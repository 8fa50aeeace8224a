"""Every fan-out mode writes the same rows: thread, process, dask, ray and deployment (child flow runs on a pool).

One real model (PicoDet-XS ONNX), six COCO images in three shards of two, one output per mode. The
``deployment`` mode runs its shard groups on a real ``prefect worker`` of a process pool named ``gpu``
(the device stays the CPU here: this machine has no GPU), deployed from ``deployments/prefect.yaml``;
its first run loses one group (the child process is SIGKILLed after inference), which must be
reported while the other group's rows stay, and its rerun finishes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT
from tests.support.annotate_helpers import comparable_rows, read_table
from tests.support.faults import kill_env
from tests.support.processes import stop_process

N_IMAGES, SHARD = 6, 2
LOCAL_MODES = ["process", "dask"] + (["ray"] if importlib.util.find_spec("prefect_ray") else [])


def _options(**kwargs):
    from pxflow.flows.options import AnnotateOptions

    return AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=SHARD, concurrency=2, **kwargs)


def _annotate(src, out, **kwargs):
    from pxflow.flows.annotate import annotate

    return annotate(input=str(src), output=str(out), options=_options(**kwargs), return_state=True)


@pytest.fixture()
def images(tmp_path, shared_dir):
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:N_IMAGES]:
        (src / path.name).symlink_to(path)
    return src


def _prefect(env, *args: str) -> str:
    bin_dir = os.path.dirname(sys.executable)
    proc = subprocess.run([os.path.join(bin_dir, "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.slow
def test_every_mode_writes_the_same_rows(prefect_server, tmp_path, images):
    state = _annotate(images, tmp_path / "thread")
    assert state.is_completed(), state
    base_images = comparable_rows(str(tmp_path / "thread" / "images"))
    base_objects = comparable_rows(str(tmp_path / "thread" / "objects"))
    rows = read_table(str(tmp_path / "thread" / "images")).to_pylist()
    assert sorted(r["image_uri"] for r in rows) == sorted(os.path.realpath(p) for p in images.iterdir())  # identities: the links' targets
    assert {r["status"] for r in rows} == {"ok"} and len(base_objects) > 0

    for mode in LOCAL_MODES:
        out = tmp_path / mode
        state = _annotate(images, out, runner=mode)
        assert state.is_completed(), (mode, state)
        assert comparable_rows(str(out / "images")) == base_images, mode
        assert comparable_rows(str(out / "objects")) == base_objects, mode
        (run,) = read_table(str(out / "runs")).to_pylist()
        assert run["shards_committed"] == 3 and run["complete"], mode

    # -- deployment: the shard-group deployment on a real process worker of a pool named "gpu"
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    _prefect(env, "work-pool", "create", "gpu", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", str(ROOT / "deployments" / "prefect.yaml"), "--name", "gpu")
    kill_once = tmp_path / "killed-one-group"
    worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
                  **kill_env("after_infer", once=kill_once)}
    worker = subprocess.Popen([os.path.join(bin_dir, "prefect"), "worker", "start", "--pool", "gpu"], cwd=tmp_path,
                              env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out = tmp_path / "deployment"
        first = _annotate(images, out, runner="deployment", deployment="annotate-shard-group/gpu", shards_per_group=2)
        assert kill_once.exists(), "no child flow run reached the kill point"
        assert first.is_failed(), first
        (run,) = read_table(str(out / "runs")).to_pylist()
        # the killed group's shards (2, or 1 for the last group) are reported; the other group's rows stay
        assert not run["complete"] and run["shards_failed"] in (1, 2), run
        assert run["shards_committed"] == 3 - run["shards_failed"]
        assert read_table(str(out / "images")).num_rows == SHARD * run["shards_committed"]

        second = _annotate(images, out, runner="deployment", deployment="annotate-shard-group/gpu", shards_per_group=2)
        assert second.is_completed(), second
        assert comparable_rows(str(out / "images")) == base_images
        assert comparable_rows(str(out / "objects")) == base_objects
        last = max(read_table(str(out / "runs")).to_pylist(), key=lambda r: r["started_at"])
        assert last["complete"] and last["images_inferred"] == SHARD * run["shards_failed"]
    finally:  # Prefect's worker and its flow-run children (its graceful stop can outlast a loaded machine's patience)
        stop_process(worker, grace_s=30, group=True)


@pytest.mark.parametrize("mode", ["process", "dask"])
def test_worker_processes_reuse_one_api_client(prefect_server, mode):
    """Prefect opens two API clients per task run (a certificate store and a connection each) unless one is
    held: the local workers started here hold one, so consecutive shard tasks of a worker share it."""
    from prefect import flow, task

    from pxflow.flows.runners import get_runner

    @task
    def touch_client() -> tuple[int, int]:
        from prefect.client.orchestration import get_client

        client = get_client(sync_client=True)
        client._pxflow_tasks_seen = getattr(client, "_pxflow_tasks_seen", 0) + 1
        return os.getpid(), client._pxflow_tasks_seen

    @flow(task_runner=get_runner(mode).task_runner(1))
    def three_in_a_row() -> list[tuple[int, int]]:
        return [touch_client.submit().result() for _ in range(3)]

    seen = three_in_a_row()
    assert len({pid for pid, _ in seen}) == 1 and seen[0][0] != os.getpid(), seen
    assert [count for _, count in seen] == [1, 2, 3], seen
