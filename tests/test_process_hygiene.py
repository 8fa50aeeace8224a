"""Nothing outlives a ``pxflow`` command that runs a flow: not its temporary Prefect server, not its workers.

The CLI runs as a real subprocess (its own session and process group) with no ``PREFECT_API_URL`` (so it
starts its own server) and its own ``PREFECT_HOME``; the test records every process below it while it runs
(psutil), kills it mid-run (SIGTERM or SIGKILL), and checks that each recorded process is gone, that no
process is left in its process group, and that the server's port is closed. ``annotate``, ``index build``
and ``lake optimize`` are covered; the shared implementation is ``flows/cli/server.py``.
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

from tests.conftest import COCO_MINI, DRINK, PICODET_ONNX, ROOT, SHARED
from tests.support.faults import kill_env


def _spawn(tmp_path, argv: list[str], api_url: str | None = None, **env: str) -> subprocess.Popen:
    """``python -m pxflow.flows ARGV`` in its own session, output to ``cli.log`` (a full pipe would block it)."""
    full_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    full_env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", **env)
    if api_url:
        full_env["PREFECT_API_URL"] = api_url
    with open(tmp_path / "cli.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "pxflow.flows", *argv], cwd=ROOT, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _start(tmp_path, *extra: str, n_images: int = 24, api_url: str | None = None) -> tuple[subprocess.Popen, str]:
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:n_images]:
        (src / path.name).symlink_to(path)
    out = tmp_path / "out"
    argv = ["annotate", "--model-dir", str(PICODET_ONNX), "--input", str(src), "--output", str(out),
            "--shard-size", "1", "--no-progress", *extra]
    return _spawn(tmp_path, argv, api_url), str(out)


def _watch_until(proc: subprocess.Popen, ready, timeout: float = 240) -> dict[int, psutil.Process]:
    """Record ``proc``'s descendants until ``ready(descendants)`` holds (or fail)."""
    seen: dict[int, psutil.Process] = {}
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the CLI ended early ({proc.returncode})"
        _record(root, seen)
        if ready(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout}s; processes: {[_cmd(p) for p in seen.values()]}")


def _record(root: psutil.Process, seen: dict[int, psutil.Process]) -> None:
    """Every descendant alive now; each one's command line read again at every look, so a child first seen
    between its fork and its exec (its parent's command line) is known by its own before it ends."""
    try:
        for child in root.children(recursive=True):
            seen.setdefault(child.pid, child)
            _cmd(seen[child.pid])
    except psutil.Error:
        pass


def _watch_to_exit(proc: subprocess.Popen, timeout: float = 300) -> dict[int, psutil.Process]:
    """Record ``proc``'s descendants until it ends by itself."""
    seen: dict[int, psutil.Process] = {}
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        _record(root, seen)
        time.sleep(0.2)
    assert proc.poll() is not None, f"still running after {timeout}s"
    return seen


def _log(tmp_path) -> str:
    return (tmp_path / "cli.log").read_text()[-3000:]


_cmdlines: dict[psutil.Process, str] = {}


def _cmd(p: psutil.Process) -> str:
    """The command line, read afresh while the process lives and remembered for after it ends.

    Read afresh: a child seen between its fork and its exec still shows its parent's command line
    (under load that window is long enough to be seen), so a first look must not stick.
    """
    try:
        _cmdlines[p] = " ".join(p.cmdline())
    except psutil.Error:
        pass
    return _cmdlines.get(p, "?")


def _servers(seen):
    return [p for p in seen.values() if "uvicorn" in _cmd(p) and p.is_running()]


def _server_port(seen) -> int:
    """The port of the one temporary Prefect server the command started (alive or not by now)."""
    (server,) = [p for p in seen.values() if "uvicorn" in _cmd(p)]
    return int(re.search(r"--port (\d+)", _cmd(server)).group(1))


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


def _group_left(pgid: int) -> list[str]:
    """Processes still in the command's process group (it was started as a session leader)."""
    left = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid}: {_cmd(p)}")
        except (psutil.Error, ProcessLookupError):
            pass
    return left


def _assert_nothing_left(proc: subprocess.Popen, seen, port: int) -> None:
    assert _all_gone(seen) == []
    assert _group_left(proc.pid) == []
    assert not _port_open(port)


def _flow_started(tmp_path) -> bool:
    return "Beginning flow run" in (tmp_path / "cli.log").read_text()


def _committed(out: str) -> bool:
    return os.path.isdir(os.path.join(out, "images", "_delta_log"))


@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_server(tmp_path, shared_dir):
    # --prefect: a flow run on a temporary server (without it, annotate starts none: tests/test_cli_no_server.py)
    proc, out = _start(tmp_path, "--prefect")
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


EMBEDDING = SHARED / "models" / "MobileNetV1_embedding_coral"


def _index_build_argv(tmp_path) -> list[str]:
    """``pxflow index build --prefect`` of a versioned index from 8 drink gallery images (the real ONNX embedding
    model); ``--prefect``: without it the command starts no server (tests/test_cli_no_server.py)."""
    lines = (DRINK / "gallery" / "drink_label.txt").read_text(encoding="utf-8").splitlines()[:8]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["index", "build", "--root", str(tmp_path / "indexes"), "--name", "drinks", "--gallery", str(labels),
            "--gallery_root", str(DRINK / "gallery"), "--rec_model_dir", str(EMBEDDING), "--index_type", "Flat", "--prefect"]


def _sigterm_mid_flow(tmp_path, proc: subprocess.Popen) -> dict[int, psutil.Process]:
    try:
        seen = _watch_until(proc, lambda s: _servers(s) and _flow_started(tmp_path))
        assert _port_open(_server_port(seen))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return seen


@pytest.mark.slow
def test_index_build_sigterm_mid_flow_leaves_no_server(tmp_path, shared_dir):
    proc = _spawn(tmp_path, _index_build_argv(tmp_path))
    seen = _sigterm_mid_flow(tmp_path, proc)
    assert proc.returncode != 0, _log(tmp_path)  # interrupted, not a success
    _assert_nothing_left(proc, seen, _server_port(seen))


@pytest.mark.slow
def test_index_build_sigkilled_mid_upload_leaves_no_server(tmp_path, shared_dir):
    """The pxflow process SIGKILLs itself while it uploads the new version (``PXFLOW_KILL_AT``): no cleanup runs."""
    proc = _spawn(tmp_path, _index_build_argv(tmp_path), **kill_env("index_mid_upload"))
    seen = _watch_to_exit(proc)
    assert proc.returncode == -signal.SIGKILL, _log(tmp_path)
    _assert_nothing_left(proc, seen, _server_port(seen))


@pytest.fixture()
def small_output(tmp_path, shared_dir) -> str:
    """A small annotate output: 4 COCO images in shards of 1 (4 commits per table), written without Prefect."""
    from tests.test_export_eval import annotate_into, coco_uris

    out = str(tmp_path / "out")
    annotate_into(out, coco_uris(4), shard_size=1)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_lake_optimize_killed_once_its_server_answers_leaves_nothing(sig, small_output, tmp_path):
    """Optimizing 4 small commits takes less than a poll: the kill comes as soon as the server listens
    (``--prefect``: the flow run on a temporary server; without it no server starts at all)."""
    proc = _spawn(tmp_path, ["lake", "optimize", "--output", small_output, "--prefect"])
    try:
        seen = _watch_until(proc, lambda s: any(_port_open(_server_port({p.pid: p})) for p in _servers(s)))
        port = _server_port(seen)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_nothing_left(proc, seen, port)


def test_a_slow_temporary_server_start_is_tried_once_more(tmp_path, monkeypatch, capfd):
    """The first start gets no time at all (a start that lost the race): it is stopped and a second one serves."""
    import httpx

    from pxflow.flows.cli.server import ServerStartError, start_temporary_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    me = psutil.Process()

    def uvicorns() -> list[psutil.Process]:
        return [p for p in me.children(recursive=True) if "uvicorn" in _cmd(p) and p.status() != psutil.STATUS_ZOMBIE
                and p.pid not in others]

    others: set[int] = set()
    others = {p.pid for p in uvicorns()}  # the session's own Prefect server (tests/support/prefect_server.py), if started

    with pytest.raises(ServerStartError, match="did not answer within 0s; then .* set PREFECT_API_URL"):
        start_temporary_server(timeouts=(0.0, 0.0))
    assert uvicorns() == []  # both attempts stopped
    server = start_temporary_server(timeouts=(0.0, 120.0))
    try:
        assert httpx.get(f"{server.api_url}/health", timeout=10).status_code == 200
        assert [f"--port {server.port}" in _cmd(p) for p in uvicorns()] == [True]  # only the retry runs
        assert "starting it once more" in capfd.readouterr().err
    finally:
        server.stop()
    assert not _port_open(server.port)


def test_with_prefect_api_url_set_nothing_is_started(prefect_server):
    """A configured server (one that answers: a dead one is refused, tests/test_cli_no_server.py) is used as is."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pxflow.flows.cli.server import prefect_session

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), prefect_session() as url:
        assert url == prefect_server
        started = [_cmd(p) for p in me.children(recursive=True) if p.pid not in before]
    assert not [c for c in started if "uvicorn" in c]
