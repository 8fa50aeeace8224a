"""Batch inputs as one stream of URIs: a prefix to list, or a manifest file naming the images.

A manifest is Parquet (a ``uri``/``image_uri``/``path``/``url`` column, else the
first string column), CSV/TSV (the same column names in a header row, else the
first column) or plain text (one URI per line, ``#`` comments). Relative
entries are taken relative to the manifest's own location, so a manifest can
travel with its images. Everything streams: a Parquet manifest is read a
record batch at a time and a prefix a listing page at a time, so millions of
inputs never sit in memory at once.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Iterable, Iterator

from . import storage
from .images import IMAGE_SUFFIXES
from .uri import is_remote, join_uri, parse_uri

MANIFEST_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt", ".lst")
URI_COLUMNS = ("uri", "image_uri", "path", "url", "key", "file")


def is_manifest(uri: str) -> bool:
    """True when ``uri`` names a manifest file rather than an image prefix."""
    return parse_uri(uri).path.lower().endswith(MANIFEST_SUFFIXES) and not storage.is_dir(uri)


def iter_input_uris(source: str, suffixes: Iterable[str] | None = IMAGE_SUFFIXES) -> Iterator[str]:
    """Every input URI of ``source`` (prefix, single image or manifest), in a stable order.

    A prefix is listed in sorted key order with ``suffixes`` as the filter; a
    manifest keeps its own order (and its own entries, whatever their suffix:
    a bad entry must become an error row, not vanish).
    """
    if is_manifest(source):
        yield from iter_manifest(source)
        return
    for info in storage.list_objects(source, suffixes):
        yield info.uri


def iter_manifest(uri: str) -> Iterator[str]:
    """The URIs a manifest names, in file order; relative entries resolved against its folder."""
    base = _parent(uri)
    path = parse_uri(uri).path.lower()
    if path.endswith(".parquet"):
        entries = _parquet_entries(uri)
    elif path.endswith((".csv", ".tsv")):
        entries = _csv_entries(uri, "\t" if path.endswith(".tsv") else ",")
    else:
        entries = _text_entries(uri)
    for entry in entries:
        entry = entry.strip()
        if entry:
            yield _resolve(entry, base)


def _parent(uri: str) -> str:
    if is_remote(uri) or uri.startswith("file://"):
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri))


def _resolve(entry: str, base: str) -> str:
    if "://" in entry or os.path.isabs(entry):
        return entry
    return join_uri(base, entry)


def _parquet_entries(uri: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        source = pq.ParquetFile(parsed.path)
    else:
        fs, path = storage.arrow_filesystem(uri)
        source = pq.ParquetFile(fs.open_input_file(path))
    schema = source.schema_arrow
    names = [n for n in URI_COLUMNS if n in schema.names]
    if not names:
        names = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)][:1]
    if not names:
        raise ValueError(f"{uri}: no URI column (expected one of {URI_COLUMNS} or a string column)")
    for batch in source.iter_batches(columns=names[:1], batch_size=65536):
        for value in batch.column(0).to_pylist():
            if value:
                yield value


def _csv_entries(uri: str, delimiter: str) -> Iterator[str]:
    text = storage.read_bytes(uri).decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    lowered = [h.strip().lower() for h in header]
    column = next((lowered.index(n) for n in URI_COLUMNS if n in lowered), None)
    if column is None:  # no header: the first row is data
        column = 0
        if header and header[0].strip():
            yield header[0]
    for row in reader:
        if len(row) > column:
            yield row[column]


def _text_entries(uri: str) -> Iterator[str]:
    for line in storage.read_bytes(uri).decode("utf-8-sig").splitlines():
        if not line.lstrip().startswith("#"):
            yield line
