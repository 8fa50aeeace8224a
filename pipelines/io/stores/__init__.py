"""Storage backends, one :class:`Store` per URI scheme, and the scheme registry.

``register_store("gs", MyGcsStore)`` adds a scheme (an installed plug-in calls it from its
``pxflow.plugins`` entry point, :mod:`pxflow.pipelines.plugins`, which :func:`store_class`
loads on the first scheme it does not know); :func:`store_class` raises
:class:`UnsupportedSchemeError` (a ``ValueError`` naming the URI and the supported schemes)
for anything still unknown, so ``gs://bucket/x`` can never silently become a local folder
called ``gs:``.
"""

from __future__ import annotations

import threading

from ...plugins import load_plugins
from .base import ObjectInfo, PreconditionFailed, Store, UnsupportedOperationError, UnsupportedSchemeError

_lock = threading.Lock()
_registry: dict[str, type[Store]] = {}


def register_store(scheme: str, cls: type[Store]) -> None:
    """Serve ``scheme://`` URIs with ``cls`` (replacing any earlier registration)."""
    if not (isinstance(cls, type) and issubclass(cls, Store)):
        raise TypeError(f"{cls!r} is not a Store subclass")
    scheme = scheme.lower().rstrip(":/")
    if not scheme:
        raise ValueError("empty scheme")
    with _lock:
        _registry[scheme] = cls


def supported_schemes() -> tuple[str, ...]:
    """Registered schemes, sorted."""
    return tuple(sorted(_registry))


def store_class(scheme: str, uri: str | None = None) -> type[Store]:
    """The store class for ``scheme``; :class:`UnsupportedSchemeError` when none is registered."""
    cls = _registry.get(scheme.lower())
    if cls is None:
        load_plugins()
        cls = _registry.get(scheme.lower())
    if cls is None:
        raise UnsupportedSchemeError(uri if uri is not None else f"{scheme}://", scheme, _registry)
    return cls


from .http import HttpStore  # noqa: E402
from .local import LocalStore  # noqa: E402
from .s3 import S3Settings, S3Store  # noqa: E402

register_store("file", LocalStore)
register_store("s3", S3Store)
register_store("http", HttpStore)
register_store("https", HttpStore)

__all__ = [
    "HttpStore",
    "LocalStore",
    "ObjectInfo",
    "PreconditionFailed",
    "S3Settings",
    "S3Store",
    "Store",
    "UnsupportedOperationError",
    "UnsupportedSchemeError",
    "register_store",
    "store_class",
    "supported_schemes",
]
