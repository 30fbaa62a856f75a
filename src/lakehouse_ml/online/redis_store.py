"""The Redis online store: the promises of :class:`~lakehouse_ml.online.store.SQLiteOnlineStore` on a
shared Redis server (``open_online_store({"type": "redis", "url": ..., ...})``).

Layout under a namespace ``<ns>`` (default ``lakehouse_ml``; give each environment its own, e.g.
``lakehouse_ml:<catalog>``, so environments sharing a server never mix):

- ``<ns>:tables``: a set of the published table names;
- ``<ns>:meta:<table>``: a hash of ``state`` (JSON: source version, publish time, contract hash,
  as_of, key columns) and ``schema`` (the Arrow schema, IPC-serialised);
- ``<ns>:rows:<table>``: a hash of key -> row, a JSON array ``[source_version, published_at
  micros, *values in schema order]`` (timestamps as UTC microseconds; JSON keeps NaN apart from
  null). A schema only grows at its end, so an older, shorter row reads as nulls past its end;
- ``<ns>:hashes:<table>``: a hash of key -> the publisher's row hash.

A publish is one MULTI/EXEC transaction (every table's rows, hashes, deletions and states): Redis
applies it whole, and discards it if the connection is lost before EXEC. Publishers take a lock
(``<ns>:publish``) around reading the recorded states and writing, so two publishes queue as on
SQLite. Reads spanning tables (``get_many``, ``read``, ``table_state``) are one MULTI/EXEC too:
one consistent snapshot. The row count is ``HLEN`` of the rows, read in that snapshot.

Passwords come from Kedro credentials or the environment, never from the URL (refused there), and
are never shown: :meth:`RedisOnlineStore.describe` is ``redis://host:port/db``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import redis
import redis.lock
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from lakehouse_ml.online.store import (
    PUBLISHED_AT,
    ROW_HASH,
    SOURCE_VERSION,
    OnlineStore,
    OnlineStoreError,
    checked_name,
    micros_from_utc,
    not_found_table,
    publish_keys,
    publish_plan,
    read_schema,
    schema_from_bytes,
    upsert_by_publish,
    utc_from_micros,
    with_as_of,
)

_KEY_COLUMN = "_key"
_SETTINGS = "serving.online_store (the service) or the catalog entry's store.url (publish_online)"
_CREDENTIALS = (
    "the password in conf/<env>/credentials.yml `online_store` (the catalog entry's credentials) "
    "or LAKEHOUSE_ML_ONLINE_STORE_PASSWORD (the service)"
)


def _decoded(rows: list[bytes | None]) -> list[list[Any]]:
    """The stored rows (None skipped), parsed as one JSON document: one parser call, not one per row."""
    return json.loads(b"[" + b",".join(raw for raw in rows if raw is not None) + b"]")


def _decoder(data_type: pa.DataType) -> Callable[[Any], Any]:
    """Stored JSON value -> the value ``get`` returns (None stays None)."""
    if pa.types.is_timestamp(data_type):
        return utc_from_micros
    if pa.types.is_floating(data_type):
        return float
    if pa.types.is_boolean(data_type):
        return bool
    return lambda value: value


def _json_values(column: pa.ChunkedArray, data_type: pa.DataType) -> list[Any]:
    """A column as JSON-ready Python values (timestamps as UTC microseconds)."""
    if pa.types.is_timestamp(data_type):
        return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    if pa.types.is_null(data_type):
        return [None] * len(column)
    return column.cast(data_type).to_pylist()


def _column_from_json(values: list[Any], data_type: pa.DataType) -> pa.Array:
    """An Arrow array of ``data_type`` from stored JSON values."""
    if pa.types.is_timestamp(data_type):
        return pa.array(values, pa.int64()).cast(data_type)
    return pa.array(values, data_type)


class RedisOnlineStore(OnlineStore):
    """Latest feature rows per key on a Redis server (see the module docstring for the layout)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        username: str | None = None,
        namespace: str = "lakehouse_ml",
        socket_timeout: float = 5.0,
        retries: int = 1,
        lock_timeout_s: float = 300.0,
    ) -> None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise OnlineStoreError(
                f"online store of type redis: url must be redis://host:port/db, got {parts.scheme}://…; check {_SETTINGS}"
            )
        if parts.password:
            raise OnlineStoreError(
                f"online store redis://{parts.hostname}:{parts.port or 6379}{parts.path}: a password in the url is refused; "
                f"put it in {_CREDENTIALS}"
            )
        self._where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"
        self._ns = str(namespace)
        self._lock_timeout = float(lock_timeout_s)
        # Retries only on a dropped connection (a server restart); a server that is down fails
        # within about socket_timeout per attempt.
        self._client = redis.Redis.from_url(
            str(url),
            password=password,
            username=username or parts.username,
            socket_timeout=float(socket_timeout),
            socket_connect_timeout=float(socket_timeout),
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), int(retries)),
        )
        with self._errors("connecting"):
            self._client.ping()

    def describe(self) -> str:
        """``redis://host:port/db`` (never credentials)."""
        return self._where

    @property
    def namespace(self) -> str:
        """The prefix of every key this store writes."""
        return self._ns

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Redis failures as :class:`OnlineStoreError` naming the store and the setting to check."""
        try:
            yield
        except redis.AuthenticationError as error:
            raise OnlineStoreError(
                f"online store {self._where}: authentication failed while {doing} ({error}); check {_CREDENTIALS}"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise OnlineStoreError(
                f"online store {self._where}: cannot reach the server while {doing} ({type(error).__name__}: {error}); check {_SETTINGS}"
            ) from None
        except redis.ResponseError as error:
            if "NOAUTH" in str(error) or "WRONGPASS" in str(error):
                raise OnlineStoreError(
                    f"online store {self._where}: authentication failed while {doing} ({error}); check {_CREDENTIALS}"
                ) from None
            raise

    # -------------------------------------------------------- keys

    def _tables_key(self) -> str:
        return f"{self._ns}:tables"

    def _meta_key(self, table: str) -> str:
        return f"{self._ns}:meta:{table}"

    def _rows_key(self, table: str) -> str:
        return f"{self._ns}:rows:{table}"

    def _hashes_key(self, table: str) -> str:
        return f"{self._ns}:hashes:{table}"

    # -------------------------------------------------------- state

    @staticmethod
    def _state(table: str, meta: dict[bytes, bytes], count: int) -> dict[str, Any] | None:
        """The table's state with its schema, from its meta hash and row count."""
        if not meta:
            return None
        state = json.loads(meta[b"state"])
        return {
            "table": table,
            "source_version": state["source_version"],
            "published_at": utc_from_micros(state["published_at"]),
            "rows": count,
            "contract_hash": state["contract_hash"],
            "as_of": utc_from_micros(state["as_of"]),
            "key_columns": state["key_columns"],
            "schema": schema_from_bytes(meta[b"schema"]),
        }

    def _states(self, tables: list[str]) -> dict[str, dict[str, Any] | None]:
        """Several tables' states (with schemas) from one snapshot."""
        with self._errors("reading table states"):
            pipe = self._client.pipeline(transaction=True)
            for table in tables:
                pipe.hgetall(self._meta_key(table))
                pipe.hlen(self._rows_key(table))
            replies = pipe.execute()
        return {table: self._state(table, replies[2 * i], replies[2 * i + 1]) for i, table in enumerate(tables)}

    def table_state(self, table: str) -> dict[str, Any] | None:
        """See :meth:`OnlineStore.table_state`."""
        state = self._states([checked_name(table)])[table]
        if state is not None:
            state.pop("schema")
        return state

    def schema(self, table: str) -> pa.Schema | None:
        """See :meth:`OnlineStore.schema`."""
        with self._errors("reading a schema"):
            blob = self._client.hget(self._meta_key(checked_name(table)), "schema")
        return None if blob is None else schema_from_bytes(blob)

    def tables(self) -> list[str]:
        """See :meth:`OnlineStore.tables`."""
        with self._errors("listing tables"):
            return sorted(name.decode() for name in self._client.smembers(self._tables_key()))

    def row_hashes(self, table: str) -> pd.DataFrame:
        """See :meth:`OnlineStore.row_hashes` (None for a row published without a hash)."""
        with self._errors("reading row hashes"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hkeys(self._rows_key(checked_name(table)))
            pipe.hgetall(self._hashes_key(table))
            keys, hashes = pipe.execute()
        decoded = {k.decode(): v.decode() for k, v in hashes.items()}
        names = [k.decode() for k in keys]
        return pd.DataFrame(
            {
                _KEY_COLUMN: pd.Series(names, dtype=object),
                ROW_HASH: pd.Series([decoded.get(k) for k in names], dtype=object),
            }
        )

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
        return self.publish({table: {"rows": None, "deleted": keys}})[table]["deleted"]

    def publish(self, updates: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
        """See :meth:`OnlineStore.publish`: the recorded states are read under the publish lock,
        every write is queued in one MULTI/EXEC (all applied or none)."""
        arrows = {
            checked_name(table): None
            if update.get("rows") is None
            else pa.Table.from_pandas(update["rows"], preserve_index=False)
            for table, update in updates.items()
        }
        with self._errors("publishing"):
            lock = self._client.lock(
                f"{self._ns}:publish", timeout=self._lock_timeout, blocking_timeout=self._lock_timeout
            )
            if not lock.acquire():
                raise OnlineStoreError(
                    f"online store {self._where}: another publish held the lock for {self._lock_timeout:.0f} s"
                )
            try:
                return self._publish(updates, arrows, lock)
            finally:
                try:  # noqa: SIM105 - the why belongs next to the pass
                    lock.release()
                except redis.RedisError:
                    pass  # expired or unreachable: it lapses after lock_timeout_s; the publish's own error is what counts

    def _publish(
        self,
        updates: dict[str, dict[str, Any]],
        arrows: dict[str, pa.Table | None],
        lock: redis.lock.Lock,
    ) -> dict[str, dict[str, int]]:
        states = self._states(list(updates))
        published = datetime.now(timezone.utc)
        pipe = self._client.pipeline(transaction=True)
        replies: dict[str, tuple[int, int | None]] = {}  # table -> (rows written, index of its HDEL reply)
        for table, update in updates.items():
            written = None
            if arrows[table] is not None:
                written = self._queue_upsert(pipe, table, arrows[table], states[table], update, published)
            deleted_keys = [str(k) for k in update.get("deleted") or []]
            index = None
            if deleted_keys:
                index = len(pipe)
                pipe.hdel(self._rows_key(table), *deleted_keys)
                pipe.hdel(self._hashes_key(table), *deleted_keys)
            replies[table] = (written or 0, index)
        if not lock.owned():
            # The lock lapsed (a publish longer than lock_timeout_s): another publisher may have
            # read the states this one computed from. Nothing is applied; the next publish redoes it.
            pipe.reset()
            raise OnlineStoreError(
                f"online store {self._where}: the publish took longer than lock_timeout_s ({self._lock_timeout:.0f} s) "
                "and lost its lock; nothing was applied (raise lock_timeout_s for publishes this large)"
            )
        results = pipe.execute() if len(pipe) else []
        return {
            table: {"upserted": written, "deleted": 0 if index is None else int(results[index])}
            for table, (written, index) in replies.items()
        }

    def _queue_upsert(
        self,
        pipe: redis.client.Pipeline,
        table: str,
        arrow: pa.Table,
        state: dict[str, Any] | None,
        update: dict[str, Any],
        published: datetime,
    ) -> int | None:
        """Queue one table's rows, hashes and state; the rows written, None if nothing is."""
        plan = publish_plan(
            table,
            arrow,
            state,
            source_version=update["source_version"],
            key_columns=update.get("key_columns"),
            contract_hash=update.get("contract_hash"),
        )
        if plan is None:
            return None
        keys, schema = plan
        stamp, version = micros_from_utc(published), int(update["source_version"])
        if len(arrow):
            store_keys = publish_keys(table, arrow, keys)
            # Columns not in the rows (no longer served) become null: the whole row is replaced.
            columns = [
                _json_values(arrow.column(f.name), f.type) if f.name in arrow.column_names else [None] * len(arrow)
                for f in schema
            ]
            encoded = {
                key: json.dumps([version, stamp, *values], separators=(",", ":"))
                for key, *values in zip(store_keys, *columns)
            }
            pipe.hset(self._rows_key(table), mapping=encoded)
            hashes = arrow.column(ROW_HASH).to_pylist() if ROW_HASH in arrow.column_names else [None] * len(arrow)
            given = {key: h for key, h in zip(store_keys, hashes) if h is not None}
            if given:
                pipe.hset(self._hashes_key(table), mapping=given)
            if len(given) < len(store_keys):  # a row without a hash must not keep its previous one
                pipe.hdel(self._hashes_key(table), *(key for key in store_keys if key not in given))
        contract_hash, as_of = update.get("contract_hash"), update.get("as_of")
        recorded = {
            "source_version": version,
            "published_at": stamp,
            "contract_hash": contract_hash if contract_hash is not None else (state or {}).get("contract_hash"),
            "as_of": micros_from_utc(as_of) if as_of is not None else None,
            "key_columns": keys,
        }
        pipe.hset(
            self._meta_key(table), mapping={"state": json.dumps(recorded), "schema": schema.serialize().to_pybytes()}
        )
        pipe.sadd(self._tables_key(), table)
        return len(arrow)

    # -------------------------------------------------------- reads

    def _snapshot(
        self, requests: dict[str, list[str]]
    ) -> dict[str, tuple[bytes | None, bytes | None, list[bytes | None]]]:
        """Per table its schema blob, its state and the stored rows of ``keys`` (in order), from one MULTI/EXEC."""
        with self._errors("reading rows"):
            pipe = self._client.pipeline(transaction=True)
            for table, keys in requests.items():
                pipe.hmget(self._meta_key(checked_name(table)), ["schema", "state"])
                if keys:
                    pipe.hmget(self._rows_key(table), [str(k) for k in keys])
            replies = iter(pipe.execute())
        return {table: (*next(replies), next(replies) if keys else []) for table, keys in requests.items()}

    def get(self, table: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """See :meth:`OnlineStore.get`."""
        return self.get_many({table: keys})[table]

    def get_many(self, requests: dict[str, list[str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """Every table's rows from one snapshot (one MULTI/EXEC of HMGETs)."""
        snapshot = self._snapshot(requests)
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for table, keys in requests.items():
            blob, _, rows = snapshot[table]
            found[table] = {}
            if blob is None:
                continue
            schema = schema_from_bytes(blob)
            decoders = [(f.name, _decoder(f.type)) for f in schema]
            for key, stored in zip((k for k, raw in zip(keys, rows) if raw is not None), _decoded(rows)):
                version, stamp, *values = stored
                row = {
                    name: None if i >= len(values) or values[i] is None else decode(values[i])
                    for i, (name, decode) in enumerate(decoders)
                }
                row[SOURCE_VERSION], row[PUBLISHED_AT] = version, utc_from_micros(stamp)
                found[table][str(key)] = row
        return found

    def read(self, requests: dict[str, list[str]]) -> dict[str, pa.Table]:
        """See :meth:`OnlineStore.read`: one MULTI/EXEC, JSON rows decoded straight into columns."""
        snapshot = self._snapshot(requests)
        tables = {}
        for table, keys in requests.items():
            blob, state, rows = snapshot[table]
            if blob is None:
                tables[table] = not_found_table(len(keys))
                continue
            as_of = json.loads(state)["as_of"] if state is not None else None
            target = read_schema(schema_from_bytes(blob))
            width = len(target) - 1  # version, stamp and the values: _found is computed
            missing = [None] * width
            stored = iter(_decoded(rows))
            decoded = []
            for raw in rows:
                if raw is None:
                    decoded.append(missing)
                    continue
                version, stamp, *values = next(stored)
                decoded.append([*values, *missing[len(values) + 2 :], version, stamp])
            columns = list(zip(*decoded)) if decoded else [()] * width
            arrays = [_column_from_json(list(values), field.type) for values, field in zip(columns, target)]
            found = pa.array([raw is not None for raw in rows], pa.bool_())
            tables[table] = with_as_of(pa.Table.from_arrays([*arrays, found], schema=target), utc_from_micros(as_of))
        return tables

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
