"""``pxflow serve`` as a real subprocess on a free loopback port, ready when ``/ready`` says so, stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT
from tests.support.processes import stop_process
from tests.support.s3_server import free_port

PXFLOW = str(Path(sys.executable).parent / "pxflow")


class Server:
    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tmp / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [PXFLOW, "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=str(ROOT),
            env={**os.environ, **(env or {})},
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60, trust_env=False)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pxflow serve exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"pxflow serve not ready:\n{self.log.read_text()[-3000:]}")

    def post(self, path: str, body=None, **kw) -> httpx.Response:
        return self.client.post(path, json=body, **kw) if body is not None else self.client.post(path, **kw)

    def healthy(self) -> bool:
        return self.proc.poll() is None and self.client.get("/health").json()["status"] == "ok"

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc, grace_s=20)
