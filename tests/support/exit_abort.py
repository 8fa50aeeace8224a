"""Test-only: make this process abort (SIGABRT, exit status 134) if it ever runs C's ``exit()``.

The upstream delta-rs/arrow bug (issue 19, item 12) aborts the process in native code that runs
during a normal interpreter exit ("terminate called without an active exception": a C++ static
destructor or C exit handler meeting a thread still running), after the script's own work, in
some runs only. Registering ``abort`` as a C exit handler (``__cxa_atexit``, how C++ registers its
static destructors) reproduces that on every run: a process that ends through the interpreter's shutdown (``sys.exit``, falling off the end)
dies with SIGABRT; one that ends with ``os._exit`` (``_exit(2)``: no C exit handlers) keeps its
status. Imported into the CLI through ``PXFLOW_WORKER_IMPORTS``.
"""

from __future__ import annotations

import ctypes

_libc = ctypes.CDLL(None)
_ABORT = ctypes.cast(_libc.abort, ctypes.c_void_p)
if _libc["__cxa_atexit"](_ABORT, None, None) != 0:  # pragma: no cover - libc refused the handler
    raise RuntimeError("__cxa_atexit(abort) was not registered")
