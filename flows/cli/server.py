"""The Prefect API of one ``pxflow`` command, and the promise that nothing the command started outlives it.

Every subcommand that runs a flow (annotate, backfill, index, lake, eval, export) enters
:func:`prefect_session` around its flow calls. Without ``PREFECT_API_URL`` the session starts
Prefect's API server itself (the uvicorn app Prefect's ephemeral mode runs) as a child that gets
SIGKILL when the command dies (``PR_SET_PDEATHSIG``), instead of letting Prefect start its own
ephemeral server: Prefect's survives a SIGKILLed or SIGTERMed command, and under load its 20 s
start-up wait fails the run. Ours waits longer and is started once more when it is slow.
With ``PREFECT_API_URL`` set that server is used and nothing is started.

Maintenance and evaluation commands (eval, export, lake, index) need no server at all: their
:class:`PrefectScope` is made ``inline`` and :meth:`PrefectScope.call` runs the flow's body as
plain Python (``flow.fn``, see :mod:`pxflow.flows.inline`) unless ``PREFECT_API_URL`` is set or
the command got ``--prefect``. So do ``annotate`` and ``backfill`` when their runner's shards run
in this process (``thread``): :meth:`PrefectScope.state`. A temporary server sends no telemetry and its runs print no
"View at" links (they would point at a server gone when the command ends).

The session also turns SIGTERM into ``SystemExit`` (cleanup runs, like Ctrl-C) and starts a small
reaper process that ends the command's other descendants (Dask or process-pool workers) once
the command is gone, however it ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

#: seconds one start of the temporary server may take before it is stopped and started once more
STARTUP_TIMEOUT_S = 120.0
#: the number of starts tried (the first and one retry)
STARTUP_ATTEMPTS = 2


class ServerStartError(RuntimeError):
    """No Prefect API to run the flow on: the temporary server did not come up, or the configured one does not
    answer (a message of one line, with the way out)."""


#: run as ``python -c`` beside the CLI: when the CLI is gone (even SIGKILLed), end what it had started
_REAPER = r"""
import os, sys, time, psutil
parent = psutil.Process(int(sys.argv[1])); me = os.getpid(); known = {}
while os.getppid() == parent.pid:
    try:
        for child in parent.children(recursive=True):
            if child.pid != me:
                known.setdefault(child.pid, child)
    except psutil.Error:
        break
    time.sleep(0.25)
left = [p for p in known.values() if p.is_running()]
for p in left:
    try: p.terminate()
    except psutil.Error: pass
_, alive = psutil.wait_procs(left, timeout=5)
for p in alive:
    try: p.kill()
    except psutil.Error: pass
"""

_reaper: subprocess.Popen | None = None


def start_reaper() -> subprocess.Popen:
    """A watcher that ends this process's descendants once this process is gone (however it ended).

    One per process: it watches every descendant, so later sessions of the same process share it.
    """
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        _reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())], stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return _reaper


def _die_with(parent_pid: int):
    """``preexec_fn`` of the server: SIGKILL when this process dies, out of our terminal's process group."""

    def setup() -> None:  # pragma: no cover - runs in the forked child
        os.setsid()
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died between fork and prctl: nobody would signal us
            os._exit(1)

    return setup


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """Prefect's API server (the ephemeral one Prefect would start itself), as a child of this command."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.api_url = ""

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Start the server and wait until ``/health`` answers; stopped again on any failure or signal."""
        import prefect
        from prefect.settings import get_current_settings

        self.port = _free_port()
        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
               "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               # its telemetry service logs "Failed to send telemetry" where there is no network
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with(os.getpid()),
            )
            self._wait_healthy(timeout)
        except BaseException:  # a timeout, an early exit, SIGTERM or Ctrl-C while waiting
            self.stop()
            raise
        return self.api_url

    def _wait_healthy(self, timeout: float) -> None:
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerStartError(f"the temporary Prefect server exited with code {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                        return
                time.sleep(0.2)
        raise ServerStartError(f"the temporary Prefect server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_temporary_server(timeouts: tuple[float, ...] = (STARTUP_TIMEOUT_S,) * STARTUP_ATTEMPTS) -> TemporaryServer:
    """A started :class:`TemporaryServer`; a start that fails or is slow is stopped and tried once more
    (``timeouts``: one per attempt), because on a loaded machine the first start can lose the race."""
    failures: list[str] = []
    for timeout in timeouts:
        server = TemporaryServer()
        try:
            server.start(timeout)
            return server
        except ServerStartError as exc:
            failures.append(str(exc))
            if len(failures) < len(timeouts):
                print(f"pxflow: {exc}; starting it once more", file=sys.stderr)
    raise ServerStartError(f"{'; then '.join(failures)}: set PREFECT_API_URL to a running Prefect server "
                           "(prefect server start), or rerun when the machine is less busy")


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API for this command: ``PREFECT_API_URL`` when set, else a temporary server of our own."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if PREFECT_API_URL.value():
        check_configured_api(PREFECT_API_URL.value())
        yield PREFECT_API_URL.value()
        return
    from prefect.context import refresh_global_settings_context

    server = start_temporary_server()
    url = server.api_url
    # worker processes (Dask, process pool, Ray) inherit the variable; background threads (events, logs)
    # read the process-global settings, refreshed from it: nothing falls back to a server of its own
    # no UI URL: Prefect would print "View at <UI>/runs/..." links to a server gone when the command ends
    saved_ui = os.environ.get("PREFECT_UI_URL")
    os.environ.update(PREFECT_API_URL=url, PREFECT_UI_URL="")
    refresh_global_settings_context()
    try:
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: ""}):
            yield url
    finally:
        drain_events(timeout=10)  # while the server still listens: Prefect's own at-exit drain would wait on it forever
        os.environ.pop("PREFECT_API_URL", None)
        if saved_ui is None:
            os.environ.pop("PREFECT_UI_URL", None)
        else:
            os.environ["PREFECT_UI_URL"] = saved_ui
        refresh_global_settings_context()
        server.stop()


def check_configured_api(url: str) -> None:
    """Raise :class:`ServerStartError` unless the configured Prefect API answers its health check (through
    Prefect's own client: its auth, its version check), before any work: a server that is down, or named by a
    stale profile, is one line naming it instead of a traceback from the first flow run."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
    except Exception as exc:  # noqa: BLE001 - entering the client already asks the server (its version)
        error = exc
    if error is not None:
        raise ServerStartError(f"the Prefect API at {url} (PREFECT_API_URL or the active Prefect profile) does not "
                               f"answer ({type(error).__name__}): start that server, or unset PREFECT_API_URL to run "
                               "without one")


def drain_events(timeout: float) -> None:
    """Send every queued Prefect event and log line now."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        EventsWorker.drain_all(timeout=timeout)
    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=timeout)


def _terminate(signum: int, frame: Any) -> None:  # SIGTERM ends the run like Ctrl-C (cleanup runs)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` in the block (cleanup runs, like Ctrl-C); the handler before it after."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def prefect_session() -> Iterator[str]:
    """Around a command's flow calls: SIGTERM as ``SystemExit``, the reaper, and :func:`prefect_api`."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with sigterm_as_exit():
        start_reaper()
        with prefect_api() as url:
            yield url


def add_prefect_flag(parser: Any, default: str = "without a server unless PREFECT_API_URL is set") -> None:
    """``--prefect``: run the command as a recorded Prefect flow (a temporary server when none is configured)."""
    parser.add_argument("--prefect", action="store_true",
                        help=f"run as a Prefect flow run (on PREFECT_API_URL, else a temporary server); default: {default}")


def prefect_configured() -> bool:
    """Whether a Prefect server is configured (``PREFECT_API_URL``): then every flow runs on it.

    Prefect's settings say; but importing them imports all of Prefect (~1 s, most of a small inline
    run), so when no place they are read from can hold an API URL (:func:`_no_settings_name_a_server`)
    the answer is no without asking.
    """
    if _no_settings_name_a_server():
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _no_settings_name_a_server() -> bool:
    """True when none of the sources Prefect 3 reads settings from can set ``PREFECT_API_URL``: no
    ``PREFECT_API*``/``PREFECT_PROFILE*`` variable in the environment; no ``.env`` naming ``PREFECT_``,
    ``prefect.toml`` naming ``api`` or ``pyproject.toml`` with ``[tool.prefect`` in the working directory; no
    profiles file (``$PREFECT_HOME/profiles.toml``, default ``~/.prefect``) naming ``api``; Prefect's own
    default profile, used without one, sets none. Conservative: any mention defers to Prefect's settings."""
    if any(name.startswith(("PREFECT_API", "PREFECT_PROFILE")) for name in os.environ):
        return False
    home = os.path.expanduser(os.environ.get("PREFECT_HOME") or "~/.prefect")
    for path, marker in ((".env", "prefect_"), ("prefect.toml", "api"), ("pyproject.toml", "[tool.prefect"),
                         (os.path.join(home, "profiles.toml"), "api")):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                if marker in file.read().lower():
                    return False
        except FileNotFoundError:
            continue
        except OSError:  # unreadable: let Prefect decide
            return False
    return True


class PrefectScope:
    """A :func:`prefect_session` entered on first need and left with the block.

    ``inline=True`` (maintenance and evaluation commands without ``--prefect``): :meth:`call` runs a
    flow's body without any server unless ``PREFECT_API_URL`` is set.

    Commands check their arguments before any server starts; only a check that reads a Prefect
    block (``--s3-block``) needs the API first, so it calls :meth:`ensure` earlier::

        with PrefectScope() as prefect:
            if args.s3_block:
                prefect.ensure()
            check(args)
            prefect.ensure()
            run_the_flow()
    """

    def __init__(self, inline: bool = False) -> None:
        self._stack = contextlib.ExitStack()
        self.url: str | None = None
        self.inline = inline and not prefect_configured()

    def ensure(self) -> str:
        if self.url is None:
            self.url = self._stack.enter_context(prefect_session())
        return self.url

    def call(self, flow: Any, **params: Any) -> Any:
        """``flow(**params)`` on the Prefect API (started now if needed); inline, ``flow.fn(**params)``.

        Either way a failure raises the flow's own exception.
        """
        if self.inline:
            return flow.fn(**params)
        self.ensure()
        return flow(**params)

    def state(self, flow: Any, **params: Any) -> Any:
        """The final ``State`` of ``flow(**params)``: a flow run on the Prefect API (call :meth:`ensure` first,
        in the main thread); inline, the body's outcome as a state (:func:`pxflow.flows.inline.flow_state`)."""
        from pxflow.flows.inline import flow_state

        if not self.inline:
            self.ensure()
        return flow_state(flow, inline=self.inline, **params)

    def __enter__(self) -> "PrefectScope":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return bool(self._stack.__exit__(*exc))
