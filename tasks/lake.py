"""The output tables: Delta Lake tables (delta-rs) under the output root, written exactly once per shard.

``<output>/images``, ``<output>/objects`` and ``<output>/runs`` are Delta tables: Parquet data
files (zstd) plus a transaction log, so Polars (``read_delta``), DuckDB, Spark and
``DeltaTable(...).to_pyarrow_dataset()`` read a consistent snapshot, and old snapshots stay
reachable by version (time travel). On S3 the log is committed with conditional puts
(delta-rs ``conditional_put=etag``), so concurrent writers never lose a commit.

A shard commits each table once, in one Delta transaction that *replaces* the rows of its
inputs for its run key (``overwrite`` with a predicate: delete-matching + add, atomically)
and records an application transaction ``pxflow/<run_key>/<shard_id>``. So:

- rerunning a shard, or two processes running the same shard, leaves one row per input;
  a loser of a concurrent commit fails (delta-rs conflict check) and its retry finds the
  shard done or replaces identical rows;
- a changed image's ``images`` row and ``objects`` rows are replaced, never duplicated;
- ``objects`` is committed before ``images``: the ``images`` row is what planning reads,
  so a crash between the two makes the next run redo the shard (replacing its objects).

``objects`` has the columns of the pipeline's result class (its record schema): a write with a
new column merges it into the table in that same commit (:data:`EVOLVING_TABLES`).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.io.uri import join_uri

from pxflow.pipelines.hooks import checkpoint

log = logging.getLogger(__name__)

#: table name -> the columns identifying one row's input (what a shard's commit replaces)
TABLES = ("images", "objects", "runs", "features", "ground_truth")
#: tables whose columns grow (the pipeline's result class's record schema; ``ground_truth.page_index``, added
#: later): their writes merge the schema, so an older table takes the new rows
EVOLVING_TABLES = ("objects", "ground_truth")
WRITER_COMPRESSION = "ZSTD"


class PartitionMismatchError(ValueError):
    """A write whose partitioning differs from the table's (fixed when the table was created)."""


class SchemaConflictError(ValueError):
    """A write that gives an existing column another type (a schema merge would cast the values silently)."""


def check_column_types(existing: Any, schema: pa.Schema, where: str) -> None:
    """Raise :class:`SchemaConflictError` when ``schema`` retypes a column of the Delta table ``existing``.

    New columns are fine (the merge adds them); a changed type is not: delta-rs's merge casts
    the new values to the table's type (1.5 into an integer column becomes 1, an int becomes a string).
    """
    from deltalake import Schema

    def name(kind: Any) -> str:  # "integer", not 'PrimitiveType("integer")'
        return str(getattr(kind, "type", kind))

    have = {field.name: field.type for field in existing.schema().fields}
    for field in Schema.from_arrow(schema).fields:
        if field.name in have and have[field.name] != field.type:
            raise SchemaConflictError(
                f"{where}: column {field.name!r} is {name(have[field.name])} in the table and {name(field.type)} "
                "in this write; a column keeps its type (declare it as before, or write to another --output)"
            )


def parse_partition(partition: str | None) -> tuple[str, str] | None:
    """``"dt=2024-01-01"`` -> ``("dt", "2024-01-01")``; a clear error for anything else."""
    if not partition:
        return None
    key, sep, value = partition.partition("=")
    if not sep or not key.isidentifier() or not value or "/" in value:
        raise ValueError(f"partition must look like name=value (e.g. dt=2024-01-01), got {partition!r}")
    return key, value


def sql_literal(value: str) -> str:
    """A string as a SQL literal for delta-rs predicates (quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _writer_properties():
    from deltalake import WriterProperties

    return WriterProperties(compression=WRITER_COMPRESSION)


@dataclass
class Lake:
    """The tables under one output root, reached through ``storage`` (its S3 settings)."""

    output: str
    storage: Storage

    # -- locations -------------------------------------------------------------------------
    def location(self, table: str) -> tuple[str, dict[str, str]]:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables: {TABLES}")
        return self.storage.table_location(join_uri(self.output, table))

    def open(self, table: str, version: int | None = None):
        """The table's current (or given) version, or None when it does not exist yet."""
        from deltalake import DeltaTable

        uri, options = self.location(table)
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        return DeltaTable(uri, version=version, storage_options=options)

    def version(self, table: str) -> int | None:
        found = self.open(table)
        return None if found is None else found.version()

    # -- reads -----------------------------------------------------------------------------
    def dataset(self, table: str, version: int | None = None):
        """A ``pyarrow.dataset`` of the table's snapshot (None when the table does not exist)."""
        found = self.open(table, version)
        return None if found is None else found.to_pyarrow_dataset()

    def read(self, table: str, columns: Sequence[str] | None = None, filter: Any = None, version: int | None = None) -> pa.Table | None:
        data = self.dataset(table, version)
        return None if data is None else data.to_table(columns=list(columns) if columns else None, filter=filter)

    def annotated(self, run_key: str, partition: str | None) -> dict[str, tuple[str | None, bool]]:
        """``image_uri -> (etag, retryable)`` of this run key's current ``images`` rows (planning).

        Reads three columns of one partition: never the objects, never the pixels. A PDF has one row per
        page under one ``image_uri``: it is retryable when any of its pages is.
        """
        data = self.dataset("images")
        if data is None:
            return {}
        condition = pc.field("run_key") == run_key
        part = parse_partition(partition)
        if part and part[0] in data.schema.names:
            condition = condition & (pc.field(part[0]) == part[1])
        rows = data.to_table(columns=["image_uri", "etag", "retryable"], filter=condition)
        uris, etags, retry = (rows.column(n).to_pylist() for n in ("image_uri", "etag", "retryable"))
        out: dict[str, tuple[str | None, bool]] = {}
        for u, e, r in zip(uris, etags, retry):
            out[u] = (e, bool(r) or (u in out and out[u][1]))
        return out

    def shard_committed(self, run_key: str, shard_id: str) -> bool:
        found = self.open("images")
        return found is not None and (found.transaction_version(app_id(run_key, shard_id)) or 0) >= 1

    # -- writes ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Write and delete one small object under the output: bad credentials or a read-only
        location fail now, with the store's message, instead of after the first shard's inference."""
        probe = join_uri(self.output, "_pxflow_write_check")
        try:
            self.storage.write_bytes(probe, b"ok")
            self.storage.delete(probe)
        except Exception as exc:
            raise ValueError(f"cannot write to {self.output}: {exc}") from None

    def check_partitioning(self, partition: str | None) -> None:
        """Raise :class:`PartitionMismatchError` before any work when ``partition`` does not fit the tables."""
        part = parse_partition(partition)
        wanted = [part[0]] if part else []
        for table in ("images", "objects"):
            found = self.open(table)
            if found is None:
                continue
            existing = list(found.metadata().partition_columns)
            if existing != wanted:
                raise PartitionMismatchError(
                    f"{self.output}/{table} is partitioned by {existing or 'nothing'}; this run writes "
                    f"{'partition ' + partition if partition else 'no partition'}. Partition columns are fixed when a "
                    "table is created: use another --output, or the same partitioning as before."
                )

    def commit_shard(
        self, run_key: str, shard_id: str, partition: str | None, uris: Sequence[str], objects: pa.Table, images: pa.Table
    ) -> dict[str, int]:
        """Replace this shard's inputs' rows in ``objects`` then ``images``; returns the new table versions."""
        part = parse_partition(partition)
        predicate = f"run_key = {sql_literal(run_key)}"
        if part:
            predicate += f" AND {part[0]} = {sql_literal(part[1])}"
        predicate += " AND image_uri IN (" + ", ".join(sql_literal(u) for u in uris) + ")"
        txn = app_id(run_key, shard_id)
        partition_by = [part[0]] if part else None
        versions = {"objects": self.write("objects", _with_partition(objects, part), predicate=predicate,
                                          partition_by=partition_by, txn=txn)}
        checkpoint("after_objects_commit")
        versions["images"] = self.write("images", _with_partition(images, part), predicate=predicate,
                                        partition_by=partition_by, txn=txn)
        return versions

    def write(
        self,
        table: str,
        data: pa.Table | Callable[[], Any],
        *,
        predicate: str | None = None,
        partition_by: Sequence[str] | None = None,
        txn: str | None = None,
    ) -> int:
        """The one write of the lake's tables; returns the new version.

        A missing table is created (partitioned by ``partition_by``); an existing one gets the rows of ``predicate``
        replaced by ``data`` in one commit, or ``data`` appended when there is no predicate. In the
        :data:`EVOLVING_TABLES` the same commit merges the schema: a column ``data`` adds is added (old rows read
        null), one it lacks is written null, one it retypes is refused (:func:`check_column_types`). ``txn`` records the
        Delta application transaction of a shard's commit. A commit that loses a race is redone on the new
        snapshot (:func:`_commit_retrying`), so ``data`` is a table or a callable giving fresh data per attempt
        (a stream such as a dataset reader).
        """
        from deltalake import CommitProperties, Transaction, write_deltalake

        uri, options = self.location(table)

        def attempt(redo: bool) -> int:
            existing = self.open(table)
            if redo and txn and existing is not None and (existing.transaction_version(txn) or 0) >= 1:
                return existing.version()  # the commit we lost to was this very shard's (another run of its input)
            commit = CommitProperties(app_transactions=[Transaction(txn, 1, int(time.time() * 1000))]) if txn else None
            payload = data() if callable(data) else data
            merge = table in EVOLVING_TABLES and existing is not None
            if merge:
                check_column_types(existing, payload.schema, f"{self.output}/{table}")
            write_deltalake(
                existing if existing is not None else uri,
                payload,
                mode="overwrite" if existing is not None and predicate else "append",
                schema_mode="merge" if merge else None,
                predicate=predicate if existing is not None else None,
                partition_by=list(partition_by) if partition_by and existing is None else None,
                storage_options=None if existing is not None else options,
                writer_properties=_writer_properties(),
                commit_properties=commit,
            )
            return existing.version() if existing is not None else self.open(table).version()  # a write updates `existing`

        return _commit_retrying(attempt, f"{self.output}/{table}")

    def append(self, table: str, data: pa.Table, partition_by: Sequence[str] | None = None) -> int:
        """A blind append (the ``runs`` and ``features`` tables); returns the new version."""
        return self.write(table, data, partition_by=partition_by)

    def delete(self, table: str, predicate: str) -> int | None:
        """Delete the rows matching ``predicate`` (one commit); returns the new version."""
        found = self.open(table)
        if found is None:
            return None
        found.delete(predicate)
        return found.version()


#: how many times one write is redone on a newer snapshot before its conflict is the caller's (a shard retry)
COMMIT_ATTEMPTS = 10


def _commit_retrying(write: Callable[[bool], int], where: str) -> int:
    """Run ``write(redo)`` (open the table's latest snapshot, write, commit), redoing it when another writer committed
    first: shards that finish together race to create the tables, and a replace-by-predicate read a snapshot that a
    concurrent commit has changed ("a concurrent transaction added new data"). delta-rs asks for the operation to be
    rerun on the new snapshot; the shards' predicates cover disjoint inputs, so rerunning it is exact. Redoing the
    commit costs milliseconds, where letting it fail would make Prefect retry the whole shard (its inference).
    """
    from deltalake.exceptions import CommitFailedError

    for attempt in range(1, COMMIT_ATTEMPTS):
        try:
            return write(attempt > 1)
        except CommitFailedError as exc:
            log.debug("%s: commit conflict (%s); redoing it on the new snapshot (attempt %d)", where, exc, attempt + 1)
            time.sleep(random.uniform(0.01, 0.05) * attempt)  # desynchronise writers that collided
    return write(True)  # the last attempt: its conflict is the caller's


def app_id(run_key: str, shard_id: str) -> str:
    """The Delta application-transaction id that marks a shard's commit."""
    return f"pxflow/{run_key}/{shard_id}"


def _with_partition(data: pa.Table, part: tuple[str, str] | None) -> pa.Table:
    if not part:
        return data
    return data.append_column(pa.field(part[0], pa.string(), nullable=False), pa.array([part[1]] * data.num_rows, pa.string()))


def in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN (" + ", ".join(sql_literal(v) for v in values) + ")"


# ---------------------------------------------------------------- the features table (PP-ShiTu gallery features)

#: one row per (image_uri, etag, model_sha256): a gallery image's feature, computed once per content and model
FEATURES_TABLE = "features"


def features_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_uri", pa.string(), nullable=False),
            pa.field("etag", pa.string(), nullable=False),
            pa.field("model_sha256", pa.string(), nullable=False),
            pa.field("model_name", pa.string()),
            pa.field("dim", pa.int32(), nullable=False),
            pa.field("feature", pa.list_(pa.float32()), nullable=False),
            pa.field("computed_at", pa.float64(), nullable=False),
        ]
    )


def append_features(lake: Lake, rows: pa.Table) -> int | None:
    """Append feature rows (a blind append: concurrent shards never conflict); returns the new version."""
    if rows.num_rows == 0:
        return lake.version(FEATURES_TABLE)
    return lake.append(FEATURES_TABLE, rows.cast(features_schema()))


def read_features(lake: Lake, model_sha256: str, uris: Iterable[str] | None = None) -> dict[tuple[str, str], list[float]]:
    """``{(image_uri, etag): feature}`` of one model's rows (optionally only ``uris``); duplicates collapse."""
    data = lake.dataset(FEATURES_TABLE)
    if data is None:
        return {}
    condition = pc.field("model_sha256") == model_sha256
    if uris is not None:
        wanted = sorted(set(uris))
        if not wanted:
            return {}
        condition = condition & pc.field("image_uri").isin(wanted)
    rows = data.to_table(columns=["image_uri", "etag", "feature"], filter=condition)
    uris_, etags, feats = (rows.column(n).to_pylist() for n in ("image_uri", "etag", "feature"))
    return {(u, e): f for u, e, f in zip(uris_, etags, feats)}


def count_features(lake: Lake, model_sha256: str | None = None) -> int:
    """Rows in the features table (of one model); 0 when it does not exist."""
    data = lake.dataset(FEATURES_TABLE)
    if data is None:
        return 0
    return data.count_rows(filter=None if model_sha256 is None else pc.field("model_sha256") == model_sha256)
