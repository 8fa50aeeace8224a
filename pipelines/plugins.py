"""The one plug-in mechanism: installed distributions' entry points in the group ``pxflow.plugins``.

A plug-in adds pipelines, predictors, stores, backends or runners by calling pxflow's
``register_*`` functions (:func:`pxflow.pipelines.registry.register_pipeline`,
:func:`pxflow.pipelines.predictors.register_predictor`,
:func:`pxflow.pipelines.io.stores.register_store`,
:func:`pxflow.pipelines.models.backends.register_backend`, ``pxflow.flows.runners.register_runner``).
It declares one entry point per distribution, for example in its ``pyproject.toml``::

    [project.entry-points."pxflow.plugins"]
    my_plugin = "my_plugin.register"          # a module whose import registers, or
    my_plugin = "my_plugin:register"          # a function called with no arguments

:func:`load_plugins` runs them once per process; the CLI, ``create_pipeline`` and every
worker process call it, so a plug-in installed in an environment is usable everywhere in it
without an edit to pxflow or a wrapper script.
"""

from __future__ import annotations

import threading
from importlib import metadata

GROUP = "pxflow.plugins"

_lock = threading.RLock()  # re-entrant: a plug-in's own lookups may ask for the plug-ins again
_loaded: list[str] | None = None


def load_plugins() -> list[str]:
    """Run every ``pxflow.plugins`` entry point once in this process; the names loaded.

    A plug-in that fails to import fails here, naming its entry point: silently skipping it
    would turn into a confusing "unknown pipeline" or "unknown runner" error later.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return list(_loaded)
        names: list[str] = []
        _loaded = names  # a nested call (from a plug-in being loaded) sees the partial list, never recurses
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            try:
                obj = ep.load()
                if callable(obj):
                    obj()
            except Exception as exc:
                _loaded = None
                raise ImportError(f"pxflow plug-in {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            names.append(ep.name)
        return list(names)
