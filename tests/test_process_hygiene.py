"""Nothing outlives ``pxflow annotate``: not its temporary Prefect server, not its Dask workers, SIGTERM or SIGKILL.

The CLI runs as a real subprocess with no ``PREFECT_API_URL`` (so it starts its own server) and its own
``PREFECT_HOME``; the test records every process below it while it runs (psutil), kills it mid-run,
and checks that each recorded process is gone and the server's port is closed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT


def _start(tmp_path, *extra: str, n_images: int = 24, api_url: str | None = None) -> tuple[subprocess.Popen, str]:
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:n_images]:
        (src / path.name).symlink_to(path)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    cmd = [sys.executable, "-m", "pxflow.flows", "annotate", "--model-dir", str(PICODET_ONNX), "--input", str(src),
           "--output", str(out), "--shard-size", "1", "--no-progress", *extra]
    with open(tmp_path / "cli.log", "w") as log:  # a file, not a pipe: a full pipe would block the CLI
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, str(out)


def _watch_until(proc: subprocess.Popen, ready, timeout: float = 240) -> dict[int, psutil.Process]:
    """Record ``proc``'s descendants until ``ready(descendants)`` holds (or fail)."""
    seen: dict[int, psutil.Process] = {}
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the CLI ended early ({proc.returncode})"
        try:
            for child in root.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            pass
        if ready(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout}s; processes: {[_cmd(p) for p in seen.values()]}")


def _log(tmp_path) -> str:
    return (tmp_path / "cli.log").read_text()[-3000:]


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return "?"


def _servers(seen):
    return [p for p in seen.values() if "uvicorn" in _cmd(p) and p.is_running()]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _all_gone(seen, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.25)
    return [f"{p.pid}: {_cmd(p)}" for p in alive]


def _committed(out: str) -> bool:
    return os.path.isdir(os.path.join(out, "images", "_delta_log"))


@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_server(tmp_path, shared_dir):
    proc, out = _start(tmp_path)
    try:
        seen = _watch_until(proc, lambda s: _servers(s) and _committed(out))
        (server,) = _servers(seen)
        port = int(re.search(r"--port (\d+)", _cmd(server)).group(1))
        assert _port_open(port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0  # interrupted, not a success
    assert _all_gone(seen) == []
    assert not _port_open(port)


@pytest.mark.slow
def test_sigkill_with_dask_workers_leaves_nothing_and_workers_use_the_parent_server(tmp_path, shared_dir):
    proc, out = _start(tmp_path, "--runner", "dask", "--workers", "2")

    def workers(seen):
        return [p for p in seen.values() if p.is_running() and "multiprocessing" in _cmd(p)]

    try:
        seen = _watch_until(proc, lambda s: len(workers(s)) >= 2 and _committed(out))
        (server,) = _servers(seen)  # exactly one server: no worker started its own
        port = int(re.search(r"--port (\d+)", _cmd(server)).group(1))
        checked = 0
        for worker in workers(seen):
            try:
                assert worker.environ().get("PREFECT_API_URL") == f"http://127.0.0.1:{port}/api", _cmd(worker)
                checked += 1
            except psutil.NoSuchProcess:
                pass
        assert checked >= 2
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _all_gone(seen) == []
    assert not _port_open(port)


@pytest.mark.slow
def test_every_shard_task_run_is_recorded_when_the_cli_exits(prefect_server, tmp_path, shared_dir):
    """Task runs are recorded from events: the CLI flushes them before it exits (12 quick shards here)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId,
                                                TaskRunFilter, TaskRunFilterName)

    from tests.support.annotate_helpers import read_table

    proc, out = _start(tmp_path, "--workers", "4", n_images=12, api_url=prefect_server)
    assert proc.wait(timeout=300) == 0, _log(tmp_path)
    (run,) = read_table(os.path.join(out, "runs")).to_pylist()
    assert run["shards_planned"] == 12
    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run["flow_run_id"]])))
        ids = [run["flow_run_id"], *(f.id for f in subflows)]
        shard_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                                           task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="shard-")))
    assert len(shard_runs) == 12
    assert {t.state.type.value for t in shard_runs} == {"COMPLETED"}
