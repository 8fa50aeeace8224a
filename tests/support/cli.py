"""Running the real ``pxflow`` console entry as a subprocess, as a script or scheduler does.

Each run gets its own ``PREFECT_HOME`` (under the test's tmp folder) and no ``PREFECT_API_URL``, so
a Prefect server started by the command shows as a database created there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without ``PREFECT_API_URL``, with a private ``PREFECT_HOME``."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def run_pxflow(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m pxflow.flows ARGS`` (the console script's ``run()``) from the repository root."""
    return subprocess.run([sys.executable, "-m", "pxflow.flows", *args], cwd=ROOT, env=cli_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=300)


def single_error_line(proc: subprocess.CompletedProcess, tmp_path: Path) -> str:
    """stderr's only line of a usage error: exit 2, no traceback, and no Prefect server started."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()  # no Prefect server started
    return lines[0]
