"""Devices end to end: a GPU this machine cannot use is a clear error before any work, never a CPU run.

This machine has no GPU (CPU-only paddlepaddle, onnxruntime without CUDAExecutionProvider), so the GPU
paths are tested for their "not usable" errors; on a machine with a usable GPU those tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import COCO_MINI, PICODET_ONNX, PICODET_PADDLE, ROOT


def _gpu_usable() -> bool:
    from pxflow.pipelines.models.backends import gpu_problems

    return len(gpu_problems(0)) < 2


needs_no_gpu = pytest.mark.skipif(_gpu_usable(), reason="a usable GPU is present: the not-usable errors cannot happen")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pxflow.flows", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_device_option_spellings():
    from pydantic import ValidationError

    from pxflow.flows.options import AnnotateOptions

    assert AnnotateOptions().device == "cpu"
    assert AnnotateOptions(device="gpu").device == "gpu:0"
    assert AnnotateOptions(device="GPU:3").device == "gpu:3"
    for bad in ("tpu", "gpu:x", "npu:0", "cpu:2"):
        with pytest.raises(ValidationError):
            AnnotateOptions(device=bad)


def test_the_device_is_in_the_job_config_but_not_in_the_run_key(shared_dir, tmp_path):
    from pxflow.tasks.job import prepare_job

    cpu = prepare_job(str(tmp_path), model_dir=str(PICODET_ONNX), device="cpu")
    gpu = prepare_job(str(tmp_path), model_dir=str(PICODET_ONNX), device="gpu:1")
    assert (cpu.device, cpu.config["device"]) == ("cpu", "cpu")
    assert (gpu.device, gpu.config["device"]) == ("gpu:1", "gpu:1")
    assert cpu.run_key == gpu.run_key  # moving a job to a GPU keeps its rows
    assert gpu.on_device("gpu:0").config["device"] == "gpu:0"


@needs_no_gpu
def test_backends_refuse_a_gpu_they_cannot_use(shared_dir):
    import paddle

    from pxflow.pipelines.models.backends import DeviceUnavailableError, OnnxBackend, PaddleBackend, require_device
    from pxflow.pipelines.models.model_dir import load_model_spec

    assert require_device("cpu") == "cpu"
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        OnnxBackend(load_model_spec(str(PICODET_ONNX)), device="gpu")
    if not paddle.device.is_compiled_with_cuda():
        # Paddle's enable_use_gpu on a CPU-only build only logs a warning and runs on the CPU: we refuse instead
        with pytest.raises(DeviceUnavailableError, match="CPU-only build"):
            PaddleBackend(load_model_spec(str(PICODET_PADDLE)), device="gpu:0")
    with pytest.raises(DeviceUnavailableError) as info:
        require_device("gpu:1")
    assert "paddle:" in str(info.value) and "onnxruntime:" in str(info.value)


@needs_no_gpu
def test_annotate_and_backfill_with_an_unusable_gpu_exit_2_before_any_work(shared_dir, tmp_path):
    out = tmp_path / "out"
    env = {"PREFECT_API_URL": ""}  # no server configured: any start of one would show in the output
    proc = _cli("annotate", "--model-dir", str(PICODET_ONNX), "--input", str(COCO_MINI / "images"), "--output", str(out),
                "--device", "gpu", env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "device 'gpu:0' is not usable here" in proc.stderr and "CUDAExecutionProvider" in proc.stderr
    assert "temporary server" not in proc.stdout + proc.stderr
    assert not out.exists()  # no table, no row

    (tmp_path / "events" / "dt=2024-01-01").mkdir(parents=True)
    proc = _cli("backfill", "--model-dir", str(PICODET_ONNX), "--input", str(tmp_path / "events"), "--output", str(out),
                "--start", "2024-01-01", "--end", "2024-01-01", "--device", "gpu:1", env=env)
    assert proc.returncode == 2 and "device 'gpu:1' is not usable here" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


@needs_no_gpu
def test_the_flow_itself_refuses_an_unusable_gpu_before_any_row(prefect_server, shared_dir, tmp_path):
    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions
    from pxflow.flows.runners import get_runner
    from pxflow.pipelines.models.backends import DeviceUnavailableError

    out = tmp_path / "out"
    state = annotate(input=str(COCO_MINI / "images"), output=str(out),
                     options=AnnotateOptions(model_dir=str(PICODET_ONNX), device="gpu"), return_state=True)
    assert state.is_failed()
    with pytest.raises(DeviceUnavailableError):
        state.result()
    assert not (out / "images").exists()
    # the shards of runner deployment (and of a remote cluster) run elsewhere: no local check there
    get_runner("deployment").check_device("gpu:0", None, None)
    get_runner("dask").check_device("gpu:0", None, "tcp://gpu-cluster:8786")


def test_pinned_workers_call_their_gpu_gpu0_and_remote_ones_keep_the_index():
    from pxflow.flows.runners import get_runner, gpu_slot_tag

    dask, ray, thread = get_runner("dask"), get_runner("ray"), get_runner("thread")
    assert dask.worker_device("gpu:3", None) == "gpu:0"  # local cluster: each worker sees one GPU
    assert dask.worker_device("gpu:3", "tcp://gpu-cluster:8786") == "gpu:3"  # remote workers: as configured
    assert ray.worker_device("gpu:1", "ray://head:10001") == "gpu:0"  # Ray pins the GPU it assigns
    assert thread.worker_device("gpu:2", None) == "gpu:2"
    assert dask.worker_device("cpu", None) == "cpu"
    assert gpu_slot_tag("gpu:1", host="node7") == "pxflow-gpu-node7-1"


def test_the_local_gpu_dask_cluster_pins_one_gpu_per_worker_and_offers_the_gpu_resource():
    import dask
    from distributed import Client

    from pxflow.flows.runners import gpu_local_cluster

    with gpu_local_cluster(2, ["0", "1"], {"PXFLOW_TEST_MARK": "1"}, []) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        pinned = client.run(lambda: (os.environ["CUDA_VISIBLE_DEVICES"], os.environ["PXFLOW_TEST_MARK"]))
        assert sorted(pinned.values()) == [("0", "1"), ("1", "1")]
        resources = [w["resources"] for w in client.scheduler_info()["workers"].values()]
        assert resources == [{"GPU": 1}, {"GPU": 1}]
        with dask.annotate(resources={"GPU": 1}):
            future = client.submit(lambda: os.environ["CUDA_VISIBLE_DEVICES"], pure=False)
        assert future.result(timeout=60) in {"0", "1"}


def test_shards_tagged_with_one_gpu_never_overlap(prefect_server):
    import threading
    import time

    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from pxflow.flows.runners import gpu_slot_tags

    tags = gpu_slot_tags("gpu:0")  # creates the global concurrency limit tag:pxflow-gpu-<host>-0 (limit 1)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    @task(tags=tags)
    def on_the_gpu() -> None:
        start = time.monotonic()
        time.sleep(1.0)
        with lock:
            spans.append((start, time.monotonic()))

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=3))
    def three_shards() -> None:
        for future in [on_the_gpu.submit() for _ in range(3)]:
            future.result()

    three_shards()
    spans.sort()
    assert len(spans) == 3
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in zip(spans, spans[1:])), spans
