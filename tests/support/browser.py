"""A real headless browser for tests that check what a page shows: Debian's Chromium.

Session fixture: finds ``chromium``, installing it with apt when missing (CI runs the README's test
command on a fresh machine). When that fails the tests skip, except under ``CI=true``, where a
missing browser must fail the build instead of silently dropping the check.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions"]


def _install() -> str | None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env, capture_output=True,
                   timeout=900, check=True)
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:
        found = _install()
    except (OSError, subprocess.SubprocessError) as exc:
        found, why = None, f"{type(exc).__name__}: {exc}"
    else:
        why = "apt-get installed no chromium"
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"chromium is missing and could not be installed ({why})")
    pytest.skip(f"chromium is missing and could not be installed ({why})")


def dump_dom(browser: str, url: str, budget_ms: int = 10000, timeout: float = 120) -> str:
    """The DOM Chromium built for ``url`` after running its scripts and decoding its images (``--dump-dom``)."""
    done = subprocess.run(
        [browser, *FLAGS, "--run-all-compositor-stages-before-draw", f"--virtual-time-budget={budget_ms}",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout

