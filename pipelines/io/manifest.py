"""Batch inputs as one stream of entries: a prefix to list, or a manifest file naming the images.

:func:`iter_entries` is the one expansion of a *location* shared by
``predict()`` (through :func:`pipelines.io.inputs.iter_inputs`) and the batch
flows. Each :class:`InputEntry` carries its URI, what the listing saw of the
object (:class:`ObjectInfo`: size, etag; None for manifest entries, which are
not listed) and, for manifests, the row's other columns (``extra``, e.g. a SAM
``prompt`` / ``prompt_type``).

A manifest is Parquet (a ``uri``/``image_uri``/``path``/``url`` column, else the
first string column), CSV/TSV (the same column names in a header row, else the
first column and no extra columns) or plain text (one URI per line, ``#``
comments). Relative entries are taken relative to the manifest's own location,
so a manifest can travel with its images. Everything streams: a Parquet
manifest is read a record batch at a time and a prefix a listing page at a
time, so millions of inputs never sit in memory at once.

A prefix lists images and PDFs (:data:`LISTED_SUFFIXES`): a PDF is one entry,
one input to plan, and becomes one item (one result, one ``images`` row) per
page when it is read (:func:`pipelines.io.inputs.iter_inputs`), since its page
count is known only then.

An empty prefix, a missing directory or a prefix with no matching images
lists nothing (no error); ``predict()`` turns "nothing listed" into one
``not_found`` result for the location.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from .images import IMAGE_SUFFIXES
from .stores import ObjectInfo
from .uri import is_remote, join_uri, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    from .storage import Storage

MANIFEST_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt", ".lst")
#: what listing a folder or prefix picks up: images, and PDFs (an input whose rows are one per page)
LISTED_SUFFIXES = IMAGE_SUFFIXES + (".pdf",)
URI_COLUMNS = ("uri", "image_uri", "path", "url", "key", "file")


@dataclass(frozen=True)
class InputEntry:
    """One input a location names: its URI, what a listing saw of it, and its manifest columns."""

    uri: str
    #: size and etag from the listing; None for manifest entries (nothing was listed)
    info: ObjectInfo | None = None
    #: the manifest row's other non-empty columns (``{"prompt": ..., "prompt_type": ...}``); empty for listings
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def size(self) -> int | None:
        return self.info.size if self.info is not None else None

    @property
    def etag(self) -> str | None:
        return self.info.etag if self.info is not None else None


def _storage(storage: "Storage | None") -> "Storage":
    if storage is not None:
        return storage
    from .storage import default_storage

    return default_storage()


def is_manifest(uri: str, storage: "Storage | None" = None) -> bool:
    """True when ``uri`` names a manifest file rather than an image prefix."""
    store = _storage(storage)
    return store.parse(uri).path.lower().endswith(MANIFEST_SUFFIXES) and not store.is_dir(uri)


def iter_entries(
    source: str | os.PathLike, storage: "Storage | None" = None, suffixes: Iterable[str] | None = LISTED_SUFFIXES
) -> Iterator[InputEntry]:
    """Every input of ``source`` (a prefix/directory, a single object, or a manifest), in a stable order.

    A prefix is listed in sorted key order with ``suffixes`` as the filter (an
    object named exactly is listed whatever its suffix); a manifest keeps its
    own order and its own entries, whatever their suffix (a bad entry must
    become an error row, not vanish). Lists nothing for an empty or missing
    prefix. Raises :class:`~pipelines.io.errors.InputError` when a manifest
    cannot be read.
    """
    store = _storage(storage)
    text = os.fspath(source)
    if is_manifest(text, store):
        for uri, extra in iter_manifest_rows(text, store):
            yield InputEntry(uri, None, extra)
        return
    for info in store.list_objects(text, suffixes):
        yield InputEntry(info.uri, info)


def iter_input_uris(
    source: str, suffixes: Iterable[str] | None = LISTED_SUFFIXES, storage: "Storage | None" = None
) -> Iterator[str]:
    """The URIs of :func:`iter_entries` (kept for callers that need nothing else)."""
    for entry in iter_entries(source, storage, suffixes):
        yield entry.uri


def iter_manifest(uri: str, storage: "Storage | None" = None) -> Iterator[str]:
    """The URIs a manifest names, in file order; relative entries resolved against its folder."""
    for entry, _extra in iter_manifest_rows(uri, storage):
        yield entry


def iter_manifest_rows(uri: str, storage: "Storage | None" = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(uri, other columns)`` per manifest row, in file order; empty URIs skipped."""
    store = _storage(storage)
    base = _parent(uri)
    path = parse_uri(uri).path.lower()
    if path.endswith(".parquet"):
        rows = _parquet_rows(uri, store)
    elif path.endswith((".csv", ".tsv")):
        rows = _csv_rows(uri, "\t" if path.endswith(".tsv") else ",", store)
    else:
        rows = ((line, {}) for line in _text_entries(uri, store))
    for entry, extra in rows:
        entry = entry.strip() if isinstance(entry, str) else entry
        if entry:
            yield _resolve(str(entry), base), extra


def _parent(uri: str) -> str:
    if is_remote(uri) or uri.startswith("file://"):
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri))


def _resolve(entry: str, base: str) -> str:
    if "://" in entry or os.path.isabs(entry):
        return entry
    return join_uri(base, entry)


def _clean(row: Mapping[str, Any], skip: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != skip and v is not None and v != ""}


def _parquet_rows(uri: str, store: "Storage") -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        source = pq.ParquetFile(parsed.path)
    else:
        fs, path = store.arrow_filesystem(uri)
        source = pq.ParquetFile(fs.open_input_file(path))
    schema = source.schema_arrow
    names = [n for n in URI_COLUMNS if n in schema.names]
    if not names:
        names = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)][:1]
    if not names:
        raise ValueError(f"{uri}: no URI column (expected one of {URI_COLUMNS} or a string column)")
    column = names[0]
    for batch in source.iter_batches(batch_size=65536):
        for row in batch.to_pylist():
            value = row.get(column)
            if value:
                yield value, _clean(row, column)


def _csv_rows(uri: str, delimiter: str, store: "Storage") -> Iterator[tuple[str, dict[str, Any]]]:
    text = store.read_bytes(uri).decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    lowered = [h.strip().lower() for h in header]
    column = next((lowered.index(n) for n in URI_COLUMNS if n in lowered), None)
    if column is None:  # no header: the first row is data, and there are no named columns
        if header and header[0].strip():
            yield header[0], {}
        for row in reader:
            if row:
                yield row[0], {}
        return
    names = [h.strip() for h in header]
    for row in reader:
        if len(row) > column:
            extra = {names[i]: v for i, v in enumerate(row) if i != column and i < len(names) and v != ""}
            yield row[column], extra


def _text_entries(uri: str, store: "Storage") -> Iterator[str]:
    for line in store.read_bytes(uri).decode("utf-8-sig").splitlines():
        if not line.lstrip().startswith("#"):
            yield line
