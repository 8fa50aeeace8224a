"""Turn what ``predict()`` accepts into a stream of loadable input items.

PaddleX accepts an ndarray (BGR), a file path, a directory, an http(s) URL, a
PDF (one image per page), its dict form ``{"img": path_or_array}`` or a list
of those; we add ``s3://`` keys and prefixes and manifest files
(``.parquet``/``.csv``/``.tsv``/``.txt``/``.lst``, see :mod:`pipelines.io.manifest`).
Expansion is lazy, so a prefix with millions of keys is never held in memory,
and loading (download + decode) is a separate step, :meth:`InputItem.load`,
that callers run in a thread pool.

:func:`iter_inputs` is the one expansion path: locations (directories,
prefixes, manifests) go through :func:`pipelines.io.manifest.iter_entries`,
the same function the batch flows use. A location that lists nothing becomes
one item whose load raises ``not_found`` (so ``predict()`` yields one error
result naming it instead of silently yielding nothing).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from .errors import InputError
from .images import check_array, decode_image, max_image_pixels
from .manifest import MANIFEST_SUFFIXES, InputEntry, iter_entries
from .stores import UnsupportedSchemeError

if TYPE_CHECKING:  # pragma: no cover
    from .storage import Storage

#: the keys of PaddleX's dict input form (``ReadImage``'s input key is ``img``)
DICT_INPUT_KEYS = ("img", "input")
#: PDF pages are rendered at this scale (72 dpi * 2), as PaddleX's PDF reader does
PDF_RENDER_SCALE = 2.0

__all__ = ["DICT_INPUT_KEYS", "InputEntry", "InputItem", "iter_entries", "iter_inputs"]


def _default_storage() -> "Storage":
    from .storage import default_storage

    return default_storage()


@dataclass(frozen=True)
class InputItem:
    """One image to predict: a URI to load (optionally one page of a PDF), or an array given by the caller.

    ``meta`` is filled by :meth:`load` with what the read saw: ``etag``,
    ``size_bytes``, ``download_ms``, ``decode_ms`` and, when an
    :class:`InputError` was raised, ``transient``. It is excluded from
    equality and hashing, as are ``storage`` and ``error``; ``options`` takes
    part in equality but not in the hash (a dict is not hashable).
    """

    uri: str | None
    array: np.ndarray | None = None
    #: where to read ``uri`` from; None: :func:`pipelines.io.storage.default_storage`
    storage: "Storage | None" = field(default=None, compare=False, repr=False)
    #: the page of a PDF (0-based); None for images
    page_index: int | None = None
    #: per-input predict options (e.g. from a manifest's ``prompt`` column); None: the call's own
    options: Mapping[str, Any] | None = field(default=None, hash=False)
    #: what :meth:`load` saw (etag, size_bytes, download_ms, decode_ms, transient)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: set when expansion already knows this input fails (a location that listed nothing, an unreadable PDF)
    error: InputError | None = field(default=None, compare=False, repr=False)
    #: a PDF already read during expansion, shared by its page items (avoids one download per page)
    document: "_PdfDocument | None" = field(default=None, compare=False, repr=False)

    def load(self) -> np.ndarray:
        """Read and decode (or validate) the image; raises :class:`InputError`."""
        try:
            return self._load()
        except InputError as exc:
            self.meta["transient"] = exc.transient
            raise

    def _load(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        if self.array is not None:
            return check_array(self.array)
        assert self.uri is not None
        if self.page_index is not None:
            document = self.document or _PdfDocument.read(self.uri, self.storage)
            self.meta.update(document.meta)
            start = time.perf_counter()
            image = document.render(self.page_index)
            self.meta["decode_ms"] = (time.perf_counter() - start) * 1e3
            return image
        data, info = _read(self.uri, self.storage)
        self.meta.update(info)
        start = time.perf_counter()
        image = decode_image(data, self.uri)
        self.meta["decode_ms"] = (time.perf_counter() - start) * 1e3
        return image


def _read(uri: str, storage: "Storage | None") -> tuple[bytes, dict[str, Any]]:
    """The bytes and the meta of one read; an unknown scheme is an ``unsupported_format`` input error."""
    store = storage or _default_storage()
    start = time.perf_counter()
    try:
        data, info = store.read_object(uri)
    except UnsupportedSchemeError as exc:
        raise InputError(uri, "unsupported_format", str(exc)) from None
    except ValueError as exc:  # a URI its store cannot parse (``s3://`` without a bucket)
        raise InputError(uri, "unsupported_format", str(exc)) from None
    meta = {"etag": info.etag, "size_bytes": info.size, "download_ms": (time.perf_counter() - start) * 1e3}
    return data, meta


# ---------------------------------------------------------------- PDF documents

_pdfium_lock = threading.Lock()  # PDFium is not thread-safe: one call at a time per process


@dataclass(eq=False)
class _PdfDocument:
    """A PDF read once; its pages render on demand (in loader threads, serialized for PDFium)."""

    uri: str
    data: bytes
    meta: dict[str, Any]
    pages: int

    @classmethod
    def read(cls, uri: str, storage: "Storage | None") -> "_PdfDocument":
        try:
            import pypdfium2 as pdfium
        except ImportError:
            raise InputError(
                uri, "unsupported_format", "PDF input needs the pypdfium2 package (pip install pypdfium2)"
            ) from None
        data, meta = _read(uri, storage)
        try:
            with _pdfium_lock:
                doc = pdfium.PdfDocument(data)
                try:
                    pages = len(doc)
                finally:
                    doc.close()
        except Exception as exc:  # pdfium.PdfiumError and friends
            raise InputError(uri, "decode_failed", f"unreadable PDF: {exc}") from None
        return cls(uri, data, meta, pages)

    def render(self, index: int, max_pixels: int | None = None) -> np.ndarray:
        import cv2
        import pypdfium2 as pdfium

        max_pixels = max_image_pixels() if max_pixels is None else max_pixels
        if not 0 <= index < self.pages:
            raise InputError(self.uri, "not_found", f"no page {index} (the PDF has {self.pages})")
        try:
            with _pdfium_lock:
                doc = pdfium.PdfDocument(self.data)
                try:
                    page = doc[index]
                    width, height = page.get_size()
                    pixels = int(width * PDF_RENDER_SCALE) * int(height * PDF_RENDER_SCALE)
                    if pixels > max_pixels:
                        raise InputError(self.uri, "too_large", f"page {index}: {pixels} pixels exceeds {max_pixels}")
                    rgb = np.array(page.render(scale=PDF_RENDER_SCALE).to_pil().convert("RGB"))
                    page.close()
                finally:
                    doc.close()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(self.uri, "decode_failed", f"page {index} could not be rendered: {exc}") from None
        return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _is_pdf(uri: str) -> bool:
    return uri.split("?", 1)[0].lower().endswith(".pdf")


def _pdf_items(uri: str, storage: "Storage | None", options: Mapping[str, Any] | None) -> Iterator[InputItem]:
    """One item per page; an unreadable PDF (or no pypdfium2) becomes one error item."""
    try:
        document = _PdfDocument.read(uri, storage)
    except InputError as exc:
        yield InputItem(uri, storage=storage, options=options, error=exc)
        return
    if document.pages == 0:
        yield InputItem(uri, storage=storage, options=options, error=InputError(uri, "decode_failed", "PDF without pages"))
        return
    for index in range(document.pages):
        yield InputItem(uri, storage=storage, page_index=index, options=options, document=document)


# ---------------------------------------------------------------- expansion

def iter_inputs(inputs: Any, storage: "Storage | None" = None) -> Iterator[InputItem]:
    """Expand ``inputs`` lazily into :class:`InputItem` s.

    Accepted: an ndarray; an :class:`InputItem` (passed through); an
    :class:`InputEntry`; a str / PathLike naming a file, a directory, an
    http(s) URL, an s3 key or prefix, a manifest or a PDF (one item per page);
    PaddleX's dict form ``{"img": path_or_array, **options}`` (``"input"`` is
    accepted too; other keys become the items' ``options``); or a list of those.
    """
    if isinstance(inputs, np.ndarray):
        yield InputItem(None, inputs)
        return
    if isinstance(inputs, InputItem):  # already resolved (batch jobs pass their own items)
        yield inputs
        return
    if isinstance(inputs, InputEntry):
        yield from _entry_items(inputs, storage)
        return
    if isinstance(inputs, Mapping):
        yield from _dict_items(inputs, storage)
        return
    if isinstance(inputs, (str, os.PathLike)):
        yield from _expand_location(os.fspath(inputs), storage)
        return
    if isinstance(inputs, Iterable):
        for item in inputs:
            if isinstance(item, (list, tuple)):
                raise TypeError("nested input lists are not supported")
            yield from iter_inputs(item, storage)
        return
    raise TypeError(f"unsupported input type {type(inputs).__name__}")


def _dict_items(value: Mapping[str, Any], storage: "Storage | None") -> Iterator[InputItem]:
    keys = [k for k in DICT_INPUT_KEYS if k in value]
    if len(keys) != 1:
        raise TypeError(f"a dict input needs exactly one of the keys {DICT_INPUT_KEYS}, got {sorted(map(str, value))}")
    source = value[keys[0]]
    if isinstance(source, (Mapping, list, tuple)):
        raise TypeError(f"dict input {keys[0]!r} must be a path, URI or array, not {type(source).__name__}")
    options = {k: v for k, v in value.items() if k != keys[0]} or None
    if isinstance(source, np.ndarray):
        yield InputItem(None, source, options=options)
        return
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"unsupported dict input {keys[0]!r} of type {type(source).__name__}")
    yield from _expand_location(os.fspath(source), storage, options)


def _entry_items(entry: InputEntry, storage: "Storage | None") -> Iterator[InputItem]:
    options = dict(entry.extra) or None
    if _is_pdf(entry.uri):
        yield from _pdf_items(entry.uri, storage, options)
    else:
        yield InputItem(entry.uri, storage=storage, options=options)


def _expand_location(
    uri: str, storage: "Storage | None", options: Mapping[str, Any] | None = None
) -> Iterator[InputItem]:
    store = storage or _default_storage()
    try:
        parsed = store.parse(uri)
    except ValueError as exc:  # UnsupportedSchemeError, or a URI its store cannot parse
        yield InputItem(uri, storage=storage, options=options, error=InputError(uri, "unsupported_format", str(exc)))
        return
    if _is_pdf(parsed.path):
        yield from _pdf_items(uri, storage, options)
        return
    single = parsed.scheme in ("http", "https")  # a URL is one image, as in PaddleX
    if not single and not parsed.path.lower().endswith(MANIFEST_SUFFIXES):
        if parsed.scheme == "file":
            single = not os.path.isdir(parsed.path)  # a missing file: a not_found result, not a crash
        elif parsed.scheme == "s3":  # a key that looks like a file is read, not listed (no request here)
            single = bool(parsed.path) and not parsed.path.endswith("/") and _looks_like_file(parsed.path)
    if single:
        yield InputItem(uri, storage=storage, options=options)
        return
    listed = False
    try:
        for entry in iter_entries(uri, store):
            listed = True
            if options:
                entry = InputEntry(entry.uri, entry.info, {**options, **entry.extra})
            yield from _entry_items(entry, storage)
    except InputError as exc:  # an unreadable manifest: one error result for it
        yield InputItem(uri, storage=storage, options=options, error=exc)
        return
    if not listed:
        yield InputItem(
            uri, storage=storage, options=options,
            error=InputError(uri, "not_found", "nothing to read here (no images under this location, or an empty manifest)"),
        )


def _looks_like_file(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return "." in name

