"""The online feature store: the latest served row of every key per feature table, for lookups by key.

``OnlineStore`` is the interface the scoring service and the ``publish_online`` pipeline use;
``SQLiteOnlineStore`` is the embedded default (one SQLite file) and
:class:`~lakehouse_ml.online.redis_store.RedisOnlineStore` the team's shared one; either (or any
other subclass) is chosen by configuration through :func:`open_online_store`.

A publish (:meth:`OnlineStore.publish`: every table's upserts and deletions) is seen by readers
whole or not at all, and :meth:`OnlineStore.get_many` / :meth:`OnlineStore.read` answer several
tables from one consistent snapshot: a request never mixes two publishes. Both stores keep these
promises (one SQLite write transaction; one Redis MULTI/EXEC); the base class's defaults, for
third-party stores, do not.

What a store keeps per feature table:

- one row per key: the entity key column(s), the served features, the timestamp key
  (``feature_ts``) and ingestion time (``ingested_at``), with the Delta ``source_version`` it was
  published from, when (``published_at``) and the publisher's row hash (``_row_hash``, what the
  next publish compares against to write only changed keys);
- the table's state: source version, publish time, row count, contract hash, the ``as_of`` time
  of the publish and the Arrow schema of the rows, so that a lookup returns values typed as the
  feature table (and the training set) has them.

Keys are strings: a single entity key's value, or the values of a composite key joined by
:data:`KEY_SEPARATOR`.

:meth:`OnlineStore.read` is the request path's columnar read: per table one Arrow row per requested
key (in request order, duplicates kept), typed as :meth:`OnlineStore.schema`, plus
``_source_version``, ``_published_at`` and ``_found``.
"""

from __future__ import annotations

import abc
import functools
import importlib
import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KEY_SEPARATOR = "\x1f"
ROW_HASH = "_row_hash"
SOURCE_VERSION = "_source_version"
PUBLISHED_AT = "_published_at"
FOUND = "_found"
# The schema metadata key of a read table that holds the table's as-of (microseconds since the epoch).
AS_OF = b"as_of"
_KEY = "_key"
_META = "_online_tables"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UTC_MICROS = pa.timestamp("us", tz="UTC")
_CHUNK = 500  # keys per SQL statement, well under SQLite's bound-variable limit
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class OnlineStoreError(ValueError):
    """A request to the online store is invalid (unknown table, bad rows, bad configuration)."""


def entity_key(values: Iterable[Any]) -> str:
    """The store's key of one entity: its key values as text, joined for a composite key."""
    return KEY_SEPARATOR.join(str(value) for value in values)


def utc_from_micros(micros: int | None) -> datetime | None:
    """An aware UTC datetime from microseconds since the epoch."""
    return None if micros is None else _EPOCH + timedelta(microseconds=int(micros))


def micros_from_utc(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if value.tzinfo is None:
        raise OnlineStoreError(f"expected a time zone aware datetime, got {value!r}")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class OnlineStore(abc.ABC):
    """Latest feature rows per key, per feature table (see the module docstring)."""

    @abc.abstractmethod
    def upsert(
        self,
        table: str,
        rows: pd.DataFrame,
        *,
        source_version: int,
        key_columns: list[str] | None = None,
        contract_hash: str | None = None,
        as_of: datetime | None = None,
    ) -> int:
        """Replace the stored row of every key in ``rows`` (one row per key) and record the
        table's state; returns the rows written. ``rows`` holds the entity key column(s), the
        features, the timestamp and ingested_at columns and optionally ``_row_hash``.
        ``key_columns`` defaults to the table's recorded keys (required on first publish)."""

    @abc.abstractmethod
    def delete(self, table: str, keys: list[str]) -> int:
        """Remove the rows of ``keys``; returns how many existed."""

    @abc.abstractmethod
    def get(self, table: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """``key -> row`` (features, timestamps as aware UTC datetimes, ``_source_version``,
        ``_published_at``); missing keys are absent."""

    @abc.abstractmethod
    def table_state(self, table: str) -> dict[str, Any] | None:
        """``{table, source_version, published_at, rows, contract_hash, as_of, key_columns}``,
        or ``None`` if the table was never published."""

    @abc.abstractmethod
    def schema(self, table: str) -> pa.Schema | None:
        """The Arrow schema of the stored rows (keys, features, times), ``None`` if never published."""

    @abc.abstractmethod
    def row_hashes(self, table: str) -> pd.DataFrame:
        """``_key`` and ``_row_hash`` of every stored row (what the publisher compares against)."""

    @abc.abstractmethod
    def tables(self) -> list[str]:
        """The published tables."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def get_many(self, requests: dict[str, list[str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """``get`` for several tables; stores that can, answer from one consistent snapshot."""
        return {table: self.get(table, keys) for table, keys in requests.items()}

    def publish(self, updates: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
        """Apply a publish: per table ``rows`` upserted (with ``source_version``, ``key_columns``,
        ``contract_hash``, ``as_of``), then the ``deleted`` keys removed; returns per table
        ``{"upserted": n, "deleted": n}`` (``rows`` None: deletions only). Readers see the whole publish or none of it, except with
        this default (table by table, for stores that cannot do better), which is not atomic."""
        counts = {}
        for table, update in updates.items():
            written = (
                0
                if update.get("rows") is None
                else self.upsert(
                    table,
                    update["rows"],
                    source_version=update["source_version"],
                    key_columns=update.get("key_columns"),
                    contract_hash=update.get("contract_hash"),
                    as_of=update.get("as_of"),
                )
            )
            counts[table] = {"upserted": written, "deleted": self.delete(table, list(update.get("deleted") or []))}
        return counts

    def read(self, requests: dict[str, list[str]]) -> dict[str, pa.Table]:
        """Per table, one row per requested key (request order, duplicates kept): the stored
        schema's columns, ``_source_version``, ``_published_at`` and ``_found`` (False and nulls for
        a missing key; only ``_found`` for a never published table). Each table carries its
        ``as_of`` from the same snapshot as its rows (:func:`read_as_of`), so a reader knows the
        time the rows stand for without a second read. This default builds on ``get_many`` and
        ``table_state`` (separate reads: not one snapshot)."""
        found = self.get_many(requests)
        tables = {}
        for table, keys in requests.items():
            state = self.table_state(table) or {}
            rows = rows_table(self.schema(table), [found[table].get(str(k)) for k in keys])
            tables[table] = with_as_of(rows, state.get("as_of"))
        return tables

    def describe(self) -> str:
        """Where the store is, for logs (never credentials)."""
        return type(self).__name__


def upsert_by_publish(
    store: OnlineStore,
    table: str,
    rows: pd.DataFrame,
    source_version: int,
    key_columns: list[str] | None,
    contract_hash: str | None,
    as_of: datetime | None,
) -> int:
    """``upsert`` for a store whose ``publish`` is the one write path: a publish of one table."""
    update = {
        "rows": rows,
        "source_version": source_version,
        "key_columns": key_columns,
        "contract_hash": contract_hash,
        "as_of": as_of,
    }
    return store.publish({table: update})[table]["upserted"]


def read_schema(schema: pa.Schema) -> pa.Schema:
    """The columns :meth:`OnlineStore.read` returns for a table stored with ``schema``."""
    return pa.schema(
        [
            *schema,
            pa.field(SOURCE_VERSION, pa.int64()),
            pa.field(PUBLISHED_AT, _UTC_MICROS),
            pa.field(FOUND, pa.bool_()),
        ]
    )


def with_as_of(table: pa.Table, as_of: datetime | None) -> pa.Table:
    """A read table carrying its store table's as-of (see :meth:`OnlineStore.read`)."""
    return table if as_of is None else table.replace_schema_metadata({AS_OF: str(micros_from_utc(as_of)).encode()})


def read_as_of(table: pa.Table) -> datetime | None:
    """The as-of a read table carries (None: never published, or published without one)."""
    metadata = table.schema.metadata or {}
    return utc_from_micros(int(metadata[AS_OF])) if AS_OF in metadata else None


def not_found_table(count: int) -> pa.Table:
    """What :meth:`OnlineStore.read` returns for a never published table: ``_found`` only, all False."""
    return pa.table({FOUND: pa.array([False] * count, pa.bool_())})


def rows_table(schema: pa.Schema | None, rows: list[dict[str, Any] | None]) -> pa.Table:
    """A :meth:`OnlineStore.read` table from ``get``-style rows (None for a missing key)."""
    if schema is None:
        return not_found_table(len(rows))
    target = read_schema(schema)
    columns = [
        pa.array([None if row is None else row.get(f.name) for row in rows], f.type) for f in target if f.name != FOUND
    ]
    return pa.Table.from_arrays([*columns, pa.array([row is not None for row in rows], pa.bool_())], schema=target)


def supported(table: str, schema: pa.Schema) -> pa.Schema:
    """``schema`` if every column has a type the stores keep (numbers, booleans, strings, timestamps)."""
    for field in schema:
        if not (
            pa.types.is_floating(field.type)
            or pa.types.is_integer(field.type)
            or pa.types.is_boolean(field.type)
            or pa.types.is_timestamp(field.type)
            or pa.types.is_string(field.type)
            or pa.types.is_null(field.type)
        ):
            raise OnlineStoreError(
                f"online store table '{table}': column {field.name}: Arrow type {field.type} is not supported "
                "(numbers, booleans, strings, timestamps)"
            )
    return schema


def merged_schema(recorded: pa.Schema | None, incoming: pa.Schema) -> pa.Schema:
    """The recorded schema updated with the incoming columns (an all-null column keeps its type;
    new columns come last, so rows written under an older schema are a prefix of the new one)."""
    fields = {field.name: field for field in (recorded or [])}
    for field in incoming:
        if field.name in (ROW_HASH, SOURCE_VERSION, PUBLISHED_AT, _KEY, FOUND):
            continue
        if pa.types.is_null(field.type) and field.name in fields:
            continue
        fields[field.name] = pa.field(field.name, _normalised(field.type))
    return pa.schema(list(fields.values()))


def publish_keys(table: str, arrow: pa.Table, keys: list[str]) -> list[str]:
    """The store keys of ``arrow``'s rows, refusing null and repeated keys."""
    key_values = list(zip(*(arrow.column(k).to_pylist() for k in keys)))
    if any(any(v is None for v in values) for values in key_values):
        raise OnlineStoreError(f"online store table '{table}': rows with a null key in {keys}")
    store_keys = [entity_key(values) for values in key_values]
    duplicated = pd.Index(store_keys)[pd.Index(store_keys).duplicated()].unique().tolist()
    if duplicated:
        raise OnlineStoreError(f"online store table '{table}': one row per key expected, keys {duplicated[:5]} repeat")
    return store_keys


def publish_plan(
    table: str,
    arrow: pa.Table,
    recorded: dict[str, Any] | None,
    *,
    source_version: int,
    key_columns: list[str] | None,
    contract_hash: str | None,
) -> tuple[list[str], pa.Schema] | None:
    """The key columns and merged schema of an upsert, or None when it writes nothing (no rows,
    same source version and contract hash). ``recorded`` is the table's state with its schema."""
    keys = list(key_columns or (recorded or {}).get("key_columns") or [])
    if not keys:
        raise OnlineStoreError(f"online store table '{table}': key_columns are needed on its first publish")
    missing = [k for k in keys if k not in arrow.column_names]
    if missing and len(arrow):
        raise OnlineStoreError(
            f"online store table '{table}': rows lack key column(s) {missing}; they have {arrow.column_names}"
        )
    unchanged = (
        recorded is not None
        and recorded["source_version"] == source_version
        and (contract_hash is None or recorded["contract_hash"] == contract_hash)
    )
    if len(arrow) == 0 and unchanged:
        return None
    return keys, supported(table, merged_schema((recorded or {}).get("schema"), arrow.schema))


# ---------------------------------------------------------------- SQLite


def checked_name(table: str) -> str:
    """``table`` if it is a valid table name (letters, digits, ``_`` and ``.``; it is quoted in SQL too)."""
    if not isinstance(table, str) or not _NAME.match(table):
        raise OnlineStoreError(f"online store table name must match {_NAME.pattern}, got {table!r}")
    return table


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_type(data_type: pa.DataType) -> str:
    if pa.types.is_floating(data_type):
        return "REAL"
    if pa.types.is_integer(data_type) or pa.types.is_boolean(data_type) or pa.types.is_timestamp(data_type):
        return "INTEGER"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_null(data_type):
        return "TEXT"
    raise OnlineStoreError(
        f"online store: Arrow type {data_type} is not supported (numbers, booleans, strings, timestamps)"
    )


def _normalised(data_type: pa.DataType) -> pa.DataType:
    """Types as stored: every timestamp as UTC microseconds, strings as ``string``."""
    if pa.types.is_timestamp(data_type):
        return _UTC_MICROS
    if pa.types.is_large_string(data_type):
        return pa.string()
    return data_type


def _to_sql_values(column: pa.ChunkedArray, data_type: pa.DataType) -> list[Any]:
    if pa.types.is_timestamp(data_type):
        return column.cast(_UTC_MICROS).cast(pa.int64()).to_pylist()
    values = column.to_pylist()
    if pa.types.is_floating(data_type):
        # SQLite stores NaN as NULL; NaN and null differ for the contract checks (NaN breaks a range).
        return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]
    if pa.types.is_boolean(data_type):
        return [None if v is None else int(v) for v in values]
    return values


def _from_sql_value(value: Any, data_type: pa.DataType | None) -> Any:
    if value is None or data_type is None:
        return value
    if pa.types.is_timestamp(data_type):
        return utc_from_micros(value)
    if pa.types.is_floating(data_type):
        return float(value)  # "NaN" included
    if pa.types.is_boolean(data_type):
        return bool(value)
    return value


def _arrow_column(values: tuple | list, data_type: pa.DataType) -> pa.Array:
    """An Arrow array of ``data_type`` from SQL values as stored (see ``_to_sql_values``)."""
    if pa.types.is_floating(data_type):
        if "NaN" in values:  # NaN is stored as text (SQLite would make a REAL NaN a NULL)
            values = [math.nan if v == "NaN" else v for v in values]
        return pa.array(values, data_type)
    if pa.types.is_timestamp(data_type):
        return pa.array(values, pa.int64()).cast(data_type)
    if pa.types.is_boolean(data_type):
        return pa.array(values, pa.int64()).cast(pa.bool_())
    return pa.array(values, data_type)


def _serialised(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def _deserialised(blob: bytes | None) -> pa.Schema | None:
    return None if blob is None else schema_from_bytes(blob)


@functools.lru_cache(maxsize=256)
def schema_from_bytes(blob: bytes) -> pa.Schema:
    # Every read parses its tables' schemas: the same few, parsed once.
    return pa.ipc.read_schema(pa.py_buffer(blob))


class SQLiteOnlineStore(OnlineStore):
    """The embedded online store: one SQLite file, one SQL table per feature table.

    WAL journal: readers (the service's threads, each with its own connection) read a
    consistent snapshot while a publish writes; each ``publish`` (all its tables) and each
    ``upsert``/``delete`` is one transaction, so a reader sees it entirely or not at all, and
    ``get_many``/``read`` read every table in one snapshot. Writers queue on SQLite's lock
    (``busy_timeout``), also across processes.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 10_000) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        with self._transaction() as connection:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {_META} (name TEXT PRIMARY KEY, source_version INTEGER, "
                "published_at INTEGER, rows INTEGER, contract_hash TEXT, as_of INTEGER, key_columns TEXT, "
                "schema BLOB)"
            )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def describe(self) -> str:
        """``sqlite:<path>``."""
        return f"sqlite:{self._path}"

    # -------------------------------------------------------- connections

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise OnlineStoreError(f"online store {self.describe()} is closed")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # One connection per thread; check_same_thread=False only so close() can close them all.
            connection = sqlite3.connect(
                self._path, timeout=self._timeout / 1000, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA busy_timeout={int(self._timeout)}")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    class _Transaction:
        def __init__(self, connection: sqlite3.Connection, mode: str) -> None:
            self.connection, self.mode = connection, mode

        def __enter__(self) -> sqlite3.Connection:
            self.connection.execute(f"BEGIN {self.mode}")
            return self.connection

        def __exit__(self, kind: Any, *_: Any) -> None:
            self.connection.execute("ROLLBACK" if kind else "COMMIT")

    def _transaction(self, mode: str = "IMMEDIATE") -> SQLiteOnlineStore._Transaction:
        """A write transaction (IMMEDIATE: takes the write lock first) or a read snapshot (DEFERRED)."""
        return self._Transaction(self._connection(), mode)

    # -------------------------------------------------------- state

    def _meta(self, connection: sqlite3.Connection, table: str) -> dict[str, Any] | None:
        row = connection.execute(
            f"SELECT source_version, published_at, rows, contract_hash, as_of, key_columns, schema FROM {_META} WHERE name = ?",
            (table,),
        ).fetchone()
        if row is None:
            return None
        return {
            "table": table,
            "source_version": row[0],
            "published_at": utc_from_micros(row[1]),
            "rows": row[2],
            "contract_hash": row[3],
            "as_of": utc_from_micros(row[4]),
            "key_columns": json.loads(row[5]),
            "schema": _deserialised(row[6]),
        }

    def table_state(self, table: str) -> dict[str, Any] | None:
        """See :meth:`OnlineStore.table_state`."""
        meta = self._meta(self._connection(), checked_name(table))
        if meta is not None:
            meta.pop("schema")
        return meta

    def schema(self, table: str) -> pa.Schema | None:
        """See :meth:`OnlineStore.schema`."""
        meta = self._meta(self._connection(), checked_name(table))
        return None if meta is None else meta["schema"]

    def tables(self) -> list[str]:
        """See :meth:`OnlineStore.tables`."""
        return [row[0] for row in self._connection().execute(f"SELECT name FROM {_META} ORDER BY name")]

    def row_hashes(self, table: str) -> pd.DataFrame:
        """See :meth:`OnlineStore.row_hashes`."""
        connection = self._connection()
        if self._meta(connection, checked_name(table)) is None:
            return pd.DataFrame({_KEY: pd.Series([], dtype=object), ROW_HASH: pd.Series([], dtype=object)})
        rows = connection.execute(f"SELECT {_KEY}, {ROW_HASH} FROM {_ident(table)}").fetchall()
        return pd.DataFrame(rows, columns=[_KEY, ROW_HASH]).astype(object)

    # -------------------------------------------------------- writes

    def upsert(
        self,
        table: str,
        rows: pd.DataFrame,
        *,
        source_version: int,
        key_columns: list[str] | None = None,
        contract_hash: str | None = None,
        as_of: datetime | None = None,
    ) -> int:
        """See :meth:`OnlineStore.upsert`. Nothing is written when there are no rows and the
        recorded source version and contract hash are unchanged."""
        return upsert_by_publish(self, table, rows, source_version, key_columns, contract_hash, as_of)

    def delete(self, table: str, keys: list[str]) -> int:
        """See :meth:`OnlineStore.delete`."""
        checked_name(table)
        if not keys:
            return 0
        with self._transaction() as connection:
            return self._delete(connection, table, keys)

    def publish(self, updates: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
        """See :meth:`OnlineStore.publish`: one write transaction over every table (readers keep
        their snapshot until it commits; an error rolls all of it back)."""
        arrows = {
            checked_name(table): None
            if update.get("rows") is None
            else pa.Table.from_pandas(update["rows"], preserve_index=False)
            for table, update in updates.items()
        }
        counts = {}
        with self._transaction() as connection:
            for table, update in updates.items():
                written = 0 if arrows[table] is None else self._upsert(connection, table, arrows[table], update)
                counts[table] = {
                    "upserted": written,
                    "deleted": self._delete(connection, table, list(update.get("deleted") or [])),
                }
        return counts

    def _upsert(self, connection: sqlite3.Connection, table: str, arrow: pa.Table, update: dict[str, Any]) -> int:
        meta = self._meta(connection, table)
        plan = publish_plan(
            table,
            arrow,
            meta,
            source_version=update["source_version"],
            key_columns=update.get("key_columns"),
            contract_hash=update.get("contract_hash"),
        )
        if plan is None:
            return 0
        keys, schema = plan
        self._ensure_table(connection, table, schema)
        published = datetime.now(timezone.utc)
        written = (
            self._write_rows(connection, table, arrow, keys, schema, update["source_version"], published)
            if len(arrow)
            else 0
        )
        count = connection.execute(f"SELECT COUNT(*) FROM {_ident(table)}").fetchone()[0]
        contract_hash, as_of = update.get("contract_hash"), update.get("as_of")
        connection.execute(
            f"INSERT OR REPLACE INTO {_META} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                table,
                int(update["source_version"]),
                micros_from_utc(published),
                count,
                contract_hash if contract_hash is not None else (meta or {}).get("contract_hash"),
                micros_from_utc(as_of) if as_of is not None else None,
                json.dumps(keys),
                _serialised(schema),
            ),
        )
        return written

    @staticmethod
    def _ensure_table(connection: sqlite3.Connection, table: str, schema: pa.Schema) -> None:
        columns = [f"{_KEY} TEXT PRIMARY KEY", *(f"{_ident(f.name)} {_sql_type(f.type)}" for f in schema)]
        columns += [f"{ROW_HASH} TEXT", f"{SOURCE_VERSION} INTEGER", f"{PUBLISHED_AT} INTEGER"]
        connection.execute(f"CREATE TABLE IF NOT EXISTS {_ident(table)} ({', '.join(columns)})")
        existing = {row[1] for row in connection.execute(f"PRAGMA table_info({_ident(table)})")}
        for field in schema:
            if field.name not in existing:  # a newly served feature
                connection.execute(
                    f"ALTER TABLE {_ident(table)} ADD COLUMN {_ident(field.name)} {_sql_type(field.type)}"
                )

    @staticmethod
    def _write_rows(
        connection: sqlite3.Connection,
        table: str,
        arrow: pa.Table,
        keys: list[str],
        schema: pa.Schema,
        source_version: int,
        published: datetime,
    ) -> int:
        store_keys = publish_keys(table, arrow, keys)
        names = [f.name for f in schema if f.name in arrow.column_names]
        values = [_to_sql_values(arrow.column(n), schema.field(n).type) for n in names]
        hashes = arrow.column(ROW_HASH).to_pylist() if ROW_HASH in arrow.column_names else [None] * len(arrow)
        stamp = micros_from_utc(published)
        # Columns not in the rows (no longer served) become NULL: the whole row is replaced.
        all_columns = [_KEY, *names, ROW_HASH, SOURCE_VERSION, PUBLISHED_AT]
        statement = (
            f"INSERT OR REPLACE INTO {_ident(table)} ({', '.join(_ident(c) for c in all_columns)}) "
            f"VALUES ({', '.join('?' * len(all_columns))})"
        )
        connection.executemany(
            statement,
            (
                (key, *row, row_hash, int(source_version), stamp)
                for key, row_hash, *row in zip(store_keys, hashes, *values)
            ),
        )
        return len(store_keys)

    def _delete(self, connection: sqlite3.Connection, table: str, keys: list[str]) -> int:
        if not keys or self._meta(connection, table) is None:
            return 0
        deleted = 0
        for start in range(0, len(keys), _CHUNK):
            chunk = [str(k) for k in keys[start : start + _CHUNK]]
            deleted += connection.execute(
                f"DELETE FROM {_ident(table)} WHERE {_KEY} IN ({', '.join('?' * len(chunk))})", chunk
            ).rowcount
        connection.execute(f"UPDATE {_META} SET rows = (SELECT COUNT(*) FROM {_ident(table)}) WHERE name = ?", (table,))
        return deleted

    # -------------------------------------------------------- reads

    def get(self, table: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """See :meth:`OnlineStore.get`."""
        return self.get_many({table: keys})[table]

    def get_many(self, requests: dict[str, list[str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """Every table's rows from one read snapshot (a publish in between is seen whole or not at all)."""
        with self._transaction("DEFERRED") as connection:
            return {table: self._read(connection, checked_name(table), keys) for table, keys in requests.items()}

    def read(self, requests: dict[str, list[str]]) -> dict[str, pa.Table]:
        """See :meth:`OnlineStore.read`: one read snapshot; SQL rows go to Arrow column by column."""
        with self._transaction("DEFERRED") as connection:
            return {
                table: self._read_columns(connection, checked_name(table), keys) for table, keys in requests.items()
            }

    def _read_columns(self, connection: sqlite3.Connection, table: str, keys: list[str]) -> pa.Table:
        meta = self._meta(connection, table)
        if meta is None:
            return not_found_table(len(keys))
        target = read_schema(meta["schema"])
        names = [f.name for f in target if f.name != FOUND]
        requested = [str(k) for k in keys]
        unique = list(dict.fromkeys(requested))
        fetched: list[tuple] = []
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            fetched += connection.execute(
                f"SELECT {_KEY}, {', '.join(_ident(n) for n in names)} FROM {_ident(table)} "
                f"WHERE {_KEY} IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        columns = list(zip(*fetched)) if fetched else [()] * (len(names) + 1)
        position = {key: i for i, key in enumerate(columns[0])}
        # Each column is converted once over the fetched (unique) rows, then the rows are taken in
        # request order: a missing key's index is null, so is its row.
        take = pa.array([position.get(key) for key in requested], pa.int64())
        arrays = [_arrow_column(values, field.type) for values, field in zip(columns[1:], target)]
        fetched_table = pa.Table.from_arrays([*arrays, pa.array([True] * len(fetched), pa.bool_())], schema=target)
        table = fetched_table.take(take)
        return with_as_of(table.set_column(len(target) - 1, FOUND, pc.is_valid(take)), meta["as_of"])

    def _read(self, connection: sqlite3.Connection, table: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        meta = self._meta(connection, table)
        if meta is None:
            return {}
        types = {field.name: field.type for field in meta["schema"]}
        types[PUBLISHED_AT] = _UTC_MICROS
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(str(k) for k in keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            cursor = connection.execute(
                f"SELECT * FROM {_ident(table)} WHERE {_KEY} IN ({', '.join('?' * len(chunk))})", chunk
            )
            names = [d[0] for d in cursor.description]
            for record in cursor:
                row = dict(zip(names, record))
                key = row.pop(_KEY)
                row.pop(ROW_HASH, None)
                found[key] = {name: _from_sql_value(value, types.get(name)) for name, value in row.items()}
        return found

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
            self._closed = True


# ---------------------------------------------------------------- configuration


def open_online_store(config: dict[str, Any]) -> OnlineStore:
    """The store a configuration names: ``{"type": "sqlite", "path": ...}``, ``{"type": "redis",
    "url": "redis://host:port/db", "password", "username", "namespace", "socket_timeout"}`` (see
    :class:`~lakehouse_ml.online.redis_store.RedisOnlineStore`) or ``{"type": "<module>.<Class>",
    **kwargs}`` (any :class:`OnlineStore` subclass)."""
    if not isinstance(config, dict) or not config.get("type"):
        raise OnlineStoreError(
            f"online store configuration needs a 'type' (sqlite, redis or <module>.<Class>), got {config!r}"
        )
    # A null option is one not given: an environment clears a base option (a SQLite path) with null.
    options = {k: v for k, v in config.items() if k != "type" and v is not None}
    kind = str(config["type"])
    if kind == "sqlite":
        if not options.get("path"):
            raise OnlineStoreError("online store of type sqlite needs a 'path'")
        return SQLiteOnlineStore(**options)
    if kind == "redis":
        if not options.get("url"):
            raise OnlineStoreError("online store of type redis needs a 'url' (redis://host:port/db)")
        from lakehouse_ml.online.redis_store import RedisOnlineStore  # only Redis users import redis

        return RedisOnlineStore(**options)
    module, _, name = kind.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError) as error:
        raise OnlineStoreError(f"online store type {kind!r}: cannot import it ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, OnlineStore)):
        raise OnlineStoreError(
            f"online store type {kind!r} must be 'sqlite', 'redis' or an OnlineStore subclass as <module>.<Class>"
        )
    return cls(**options)
