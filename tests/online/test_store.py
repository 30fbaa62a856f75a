"""The SQLite online store: typed round trips, replace/delete per key, recorded state, no-op
publishes, concurrent readers during writes, and the store chosen by configuration."""

from __future__ import annotations

import hashlib
import math
import threading
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pytest

from lakehouse_ml.online.store import OnlineStore, OnlineStoreError, SQLiteOnlineStore, open_online_store

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _rows(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_id": ["c1", "c2"],
        "feature_ts": pd.to_datetime(["2026-02-28T00:00:00Z", "2026-02-27T00:00:00Z"]),
        "ingested_at": pd.to_datetime(["2026-02-28T02:00:00.000001Z", None], utc=True),
        "orders_30d": [3.0, math.nan],
        "days_since_last_order": pd.array([4, None], dtype="Int32"),
        "plan_tier": ["basic", None],
        # As Spark's Arrow gives it: NaN and null are different values.
        "avg_order_value": pd.arrays.ArrowExtensionArray(pa.array([float("nan"), None], pa.float64())),
        "_row_hash": ["h1", "h2"],
    })
    return frame.assign(**overrides)


@pytest.fixture
def store(tmp_path):
    opened = SQLiteOnlineStore(str(tmp_path / "online" / "store.db"))
    yield opened
    opened.close()


def test_rows_round_trip_with_their_types_times_and_lineage(store):
    assert store.table_state("customer_activity") is None
    written = store.upsert("customer_activity", _rows(), source_version=7, key_columns=["customer_id"], contract_hash="abc", as_of=T0)
    assert written == 2
    got = store.get("customer_activity", ["c2", "c1", "nobody"])
    assert set(got) == {"c1", "c2"}
    c1, c2 = got["c1"], got["c2"]
    assert c1["customer_id"] == "c1" and c1["orders_30d"] == 3.0 and c1["days_since_last_order"] == 4 and c1["plan_tier"] == "basic"
    assert c1["feature_ts"] == datetime(2026, 2, 28, tzinfo=UTC)
    assert c1["ingested_at"] == datetime(2026, 2, 28, 2, 0, 0, 1, tzinfo=UTC)  # microseconds kept
    # An Arrow NaN stays NaN (SQLite alone would make it NULL), a null stays None; a NumPy NaN is
    # pandas' missing value, so None.
    assert math.isnan(c1["avg_order_value"]) and c2["avg_order_value"] is None
    assert c2["orders_30d"] is None and c2["days_since_last_order"] is None and c2["ingested_at"] is None
    assert c1["_source_version"] == 7 and c1["_published_at"].tzinfo is not None
    state = store.table_state("customer_activity")
    assert state["table"] == "customer_activity" and state["source_version"] == 7 and state["rows"] == 2
    assert state["contract_hash"] == "abc" and state["as_of"] == T0 and state["key_columns"] == ["customer_id"]
    assert state["published_at"] == c1["_published_at"]
    # The Arrow types of the rows: an int column with nulls is still an int.
    schema = store.schema("customer_activity")
    assert schema.field("days_since_last_order").type == pa.int32()
    assert schema.field("orders_30d").type == pa.float64() and schema.field("plan_tier").type == pa.string()
    assert schema.field("feature_ts").type == pa.timestamp("us", tz="UTC")
    assert store.tables() == ["customer_activity"]
    assert sorted(store.row_hashes("customer_activity").itertuples(index=False)) == [("c1", "h1"), ("c2", "h2")]


def test_an_upsert_replaces_whole_rows_per_key_and_delete_removes_them(store):
    store.upsert("t", _rows(), source_version=1, key_columns=["customer_id"])
    changed = pd.DataFrame({"customer_id": ["c2", "c3"], "feature_ts": pd.to_datetime(["2026-03-01", "2026-03-01"], utc=True),
                            "orders_30d": [5.0, 1.0]})
    assert store.upsert("t", changed, source_version=2) == 2  # the recorded key columns are used
    got = store.get("t", ["c1", "c2", "c3"])
    assert got["c1"]["orders_30d"] == 3.0 and got["c1"]["_source_version"] == 1
    assert got["c2"]["orders_30d"] == 5.0 and got["c2"]["plan_tier"] is None and got["c2"]["_source_version"] == 2
    assert store.table_state("t")["rows"] == 3 and store.table_state("t")["source_version"] == 2
    assert store.delete("t", ["c1", "nobody"]) == 1
    assert set(store.get("t", ["c1", "c2", "c3"])) == {"c2", "c3"}
    assert store.table_state("t")["rows"] == 2
    assert store.delete("never_published", ["c1"]) == 0


def _file_digest(store: SQLiteOnlineStore) -> list[str]:
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()]


def test_an_empty_upsert_of_the_same_version_writes_nothing_but_a_new_version_is_recorded(store):
    store.upsert("t", _rows(), source_version=3, key_columns=["customer_id"], contract_hash="abc")
    before, digest = store.table_state("t"), _file_digest(store)
    assert store.upsert("t", _rows().iloc[:0], source_version=3, contract_hash="abc") == 0
    assert store.table_state("t") == before and _file_digest(store) == digest
    assert store.upsert("t", _rows().iloc[:0], source_version=4, contract_hash="abc") == 0
    after = store.table_state("t")
    assert after["source_version"] == 4 and after["rows"] == 2 and after["published_at"] > before["published_at"]


def test_bad_writes_name_table_and_problem(store):
    with pytest.raises(OnlineStoreError, match=r"'t': key_columns are needed on its first publish"):
        store.upsert("t", _rows(), source_version=1)
    with pytest.raises(OnlineStoreError, match=r"'t': one row per key expected, keys \['c1'\] repeat"):
        store.upsert("t", _rows(customer_id=["c1", "c1"]), source_version=1, key_columns=["customer_id"])
    with pytest.raises(OnlineStoreError, match=r"'t': rows with a null key"):
        store.upsert("t", _rows(customer_id=["c1", None]), source_version=1, key_columns=["customer_id"])
    with pytest.raises(OnlineStoreError, match=r"table name must match"):
        store.get('x"; DROP TABLE y; --', ["c1"])
    assert store.table_state("t") is None  # nothing half-written


def test_data_persists_in_the_file(tmp_path):
    path = str(tmp_path / "store.db")
    first = SQLiteOnlineStore(path)
    first.upsert("t", _rows(), source_version=1, key_columns=["customer_id"])
    first.close()
    second = SQLiteOnlineStore(path)
    assert second.get("t", ["c1"])["c1"]["orders_30d"] == 3.0
    assert second.path.with_name("store.db-wal").exists() or second.path.exists()
    second.close()


def test_readers_in_other_threads_see_each_publish_whole(store):
    """Every read during a stream of publishes sees all keys of one publish, never a mix."""
    keys = [f"c{i:04d}" for i in range(2000)]

    def publish(version: int) -> None:
        rows = pd.DataFrame({"customer_id": keys, "feature_ts": pd.Timestamp("2026-03-01", tz="UTC"), "orders_30d": float(version)})
        store.upsert("t", rows, source_version=version, key_columns=["customer_id"])

    publish(0)
    seen, errors, done = [], [], threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                rows = store.get("t", keys)
                seen.append({row["orders_30d"] for row in rows.values()})
        except Exception as error:  # reported below
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for version in range(1, 15):
        publish(version)
    done.set()
    for reader in readers:
        reader.join()
    assert not errors
    assert len(seen) > 3 and all(len(values) == 1 for values in seen)
    assert store.get("t", keys[:1])[keys[0]]["orders_30d"] == 14.0


class _Custom(SQLiteOnlineStore):
    """A store class named by configuration (as a server-backed store would be)."""


def test_the_store_is_chosen_by_configuration(tmp_path):
    sqlite = open_online_store({"type": "sqlite", "path": str(tmp_path / "a.db")})
    assert isinstance(sqlite, SQLiteOnlineStore) and sqlite.describe() == f"sqlite:{tmp_path / 'a.db'}"
    sqlite.close()
    custom = open_online_store({"type": f"{__name__}._Custom", "path": str(tmp_path / "b.db")})
    assert type(custom) is _Custom and isinstance(custom, OnlineStore)
    custom.close()
    with pytest.raises(OnlineStoreError, match="needs a 'type'"):
        open_online_store({"path": "x.db"})
    with pytest.raises(OnlineStoreError, match="'no.such.Store': cannot import it"):
        open_online_store({"type": "no.such.Store"})
    with pytest.raises(OnlineStoreError, match="must be 'sqlite' or an OnlineStore subclass"):
        open_online_store({"type": "datetime.datetime"})
    with pytest.raises(OnlineStoreError, match="needs a 'path'"):
        open_online_store({"type": "sqlite"})
