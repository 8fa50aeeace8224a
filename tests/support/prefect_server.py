"""Prefect's real ephemeral API server for flow tests, started once per session.

``prefect_test_harness`` runs a temporary server with its own SQLite database;
``api_url`` is exported so subprocesses (the CLI under test, a worker) talk to
the same server instead of starting their own.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_server():
    """Yield the harness server's API URL (also set as PREFECT_API_URL for subprocesses)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        url = PREFECT_API_URL.value()
        saved = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if saved is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = saved
