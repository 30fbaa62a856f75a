"""The online stores, SQLite and Redis alike (the ``store`` fixture is each of them): typed round
trips, replace/delete per key, recorded state, no-op publishes, all-or-nothing publishes across
tables under concurrent readers, the columnar ``read``, and the store chosen by configuration."""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest
import redis

from lakehouse_ml.online.store import OnlineStore, OnlineStoreError, SQLiteOnlineStore, open_online_store, read_as_of

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _rows(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "feature_ts": pd.to_datetime(["2026-02-28T00:00:00Z", "2026-02-27T00:00:00Z"]),
            "ingested_at": pd.to_datetime(["2026-02-28T02:00:00.000001Z", None], utc=True),
            "orders_30d": [3.0, math.nan],
            "days_since_last_order": pd.array([4, None], dtype="Int32"),
            "plan_tier": ["basic", None],
            # As Spark's Arrow gives it: NaN and null are different values.
            "avg_order_value": pd.arrays.ArrowExtensionArray(pa.array([float("nan"), None], pa.float64())),
            "_row_hash": ["h1", "h2"],
        }
    )
    return frame.assign(**overrides)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store(request, tmp_path):
    """Each store: a fresh SQLite file, or the session's Redis under a namespace of this test's own."""
    if request.param == "sqlite":
        opened = open_online_store({"type": "sqlite", "path": str(tmp_path / "online" / "store.db")})
    else:
        server = request.getfixturevalue("redis_server")
        opened = open_online_store(
            {"type": "redis", "url": server.url, "password": server.password, "namespace": f"test:{uuid.uuid4().hex}"}
        )
    yield opened
    opened.close()


def test_rows_round_trip_with_their_types_times_and_lineage(store):
    assert store.table_state("customer_activity") is None
    written = store.upsert(
        "customer_activity", _rows(), source_version=7, key_columns=["customer_id"], contract_hash="abc", as_of=T0
    )
    assert written == 2
    got = store.get("customer_activity", ["c2", "c1", "nobody"])
    assert set(got) == {"c1", "c2"}
    c1, c2 = got["c1"], got["c2"]
    assert (
        c1["customer_id"] == "c1"
        and c1["orders_30d"] == 3.0
        and c1["days_since_last_order"] == 4
        and c1["plan_tier"] == "basic"
    )
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
    changed = pd.DataFrame(
        {
            "customer_id": ["c2", "c3"],
            "feature_ts": pd.to_datetime(["2026-03-01", "2026-03-01"], utc=True),
            "orders_30d": [5.0, 1.0],
        }
    )
    assert store.upsert("t", changed, source_version=2) == 2  # the recorded key columns are used
    got = store.get("t", ["c1", "c2", "c3"])
    assert got["c1"]["orders_30d"] == 3.0 and got["c1"]["_source_version"] == 1
    assert got["c2"]["orders_30d"] == 5.0 and got["c2"]["plan_tier"] is None and got["c2"]["_source_version"] == 2
    assert store.table_state("t")["rows"] == 3 and store.table_state("t")["source_version"] == 2
    assert store.delete("t", ["c1", "nobody"]) == 1
    assert set(store.get("t", ["c1", "c2", "c3"])) == {"c2", "c3"}
    assert store.table_state("t")["rows"] == 2
    assert store.delete("never_published", ["c1"]) == 0


def _digest(store: OnlineStore, request: pytest.FixtureRequest) -> list:
    """Everything the store holds: its files' bytes, or every Redis key of its namespace with its content."""
    if isinstance(store, SQLiteOnlineStore):
        files = [store.path, store.path.with_name(store.path.name + "-wal")]
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()]
    server = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url, password=server.password)
    content = []
    for key in sorted(client.scan_iter(f"{store.namespace}:*")):
        kind = client.type(key)
        content.append((key, sorted(client.hgetall(key).items()) if kind == b"hash" else sorted(client.smembers(key))))
    client.close()
    assert content
    return content


def test_an_empty_upsert_of_the_same_version_writes_nothing_but_a_new_version_is_recorded(store, request):
    store.upsert("t", _rows(), source_version=3, key_columns=["customer_id"], contract_hash="abc")
    before, digest = store.table_state("t"), _digest(store, request)
    assert store.upsert("t", _rows().iloc[:0], source_version=3, contract_hash="abc") == 0
    assert store.publish(
        {"t": {"rows": _rows().iloc[:0], "deleted": [], "source_version": 3, "contract_hash": "abc"}}
    ) == {"t": {"upserted": 0, "deleted": 0}}
    assert store.table_state("t") == before and _digest(store, request) == digest
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
    with pytest.raises(OnlineStoreError, match=r"'t': column tags: Arrow type list<item: string> is not supported"):
        store.upsert("t", _rows(tags=[["a"], ["b"]]), source_version=1, key_columns=["customer_id"])
    # A bad table in a publish stops all of it: the good table before it is not written either.
    good = {"rows": _rows(), "source_version": 1, "key_columns": ["customer_id"]}
    with pytest.raises(OnlineStoreError, match=r"'t': one row per key expected"):
        store.publish({"good": good, "t": {**good, "rows": _rows(customer_id=["c1", "c1"])}})
    assert store.table_state("t") is None and store.table_state("good") is None  # nothing half-written
    assert store.tables() == []


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
    """Every read during a stream of publishes sees one publish whole, never a mix: across keys and
    across tables, upserts and deletions alike (through get_many and read)."""
    keys = [f"c{i:04d}" for i in range(2000)]

    def publish(version: int) -> None:
        everyone = pd.DataFrame(
            {"customer_id": keys, "feature_ts": pd.Timestamp("2026-03-01", tz="UTC"), "orders_30d": float(version)}
        )
        # Table u holds every other key, the other half each version: upserts and deletions in one publish.
        half = everyone.iloc[version % 2 :: 2].rename(columns={"orders_30d": "version"})
        as_of = T0 + timedelta(days=version)
        store.publish(
            {
                "t": {
                    "rows": everyone,
                    "deleted": [],
                    "source_version": version,
                    "key_columns": ["customer_id"],
                    "as_of": as_of,
                },
                "u": {
                    "rows": half,
                    "deleted": keys[(version + 1) % 2 :: 2],
                    "source_version": version,
                    "key_columns": ["customer_id"],
                    "as_of": as_of,
                },
            }
        )

    def consistent(t_values: set, u_keys: list[str], u_values: set) -> bool:
        [version] = t_values or {None}
        return u_values == {version} and u_keys == keys[int(version) % 2 :: 2]

    publish(0)
    seen, errors, done = [], [], threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                rows = store.get_many({"t": keys, "u": keys})
                seen.append(
                    consistent(
                        {r["orders_30d"] for r in rows["t"].values()},
                        sorted(rows["u"]),
                        {r["version"] for r in rows["u"].values()},
                    )
                )
                tables = store.read({"t": keys, "u": keys})
                t, u = tables["t"].to_pydict(), tables["u"].to_pydict()
                u_found = [k for k, f in zip(u["customer_id"], u["_found"]) if f]
                seen.append(
                    all(t["_found"])
                    and consistent(set(t["orders_30d"]), u_found, {v for v, f in zip(u["version"], u["_found"]) if f})
                )
                # The as-of a read carries is the one published with its rows.
                version = T0 + timedelta(days=int(t["orders_30d"][0]))
                seen.append(read_as_of(tables["t"]) == read_as_of(tables["u"]) == version)
        except Exception as error:  # noqa: BLE001 - any failure in the reader thread is reported below
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
    assert len(seen) > 6 and all(seen)
    assert store.get("t", keys[:1])[keys[0]]["orders_30d"] == 14.0
    assert sorted(store.get("u", keys)) == keys[0::2] and store.table_state("u")["rows"] == 1000


def test_a_publish_returns_its_counts_per_table(store):
    counts = store.publish(
        {
            "a": {"rows": _rows(), "deleted": [], "source_version": 1, "key_columns": ["customer_id"]},
            "b": {
                "rows": _rows(),
                "deleted": ["c2"],
                "source_version": 5,
                "key_columns": ["customer_id"],
                "contract_hash": "h",
                "as_of": T0,
            },
        }
    )
    assert counts == {"a": {"upserted": 2, "deleted": 0}, "b": {"upserted": 2, "deleted": 1}}
    assert (
        store.table_state("b")["rows"] == 1 and store.table_state("b")["as_of"] == T0 and store.tables() == ["a", "b"]
    )
    again = store.publish({"b": {"rows": _rows().iloc[:0], "deleted": ["c1", "c2"], "source_version": 5}})
    assert again == {"b": {"upserted": 0, "deleted": 1}} and store.table_state("b")["rows"] == 0
    assert store.publish({"a": {"rows": None, "deleted": ["c1"]}}) == {"a": {"upserted": 0, "deleted": 1}}
    assert store.table_state("a")["rows"] == 1 and store.table_state("a")["source_version"] == 1


READ_KEYS = ["c2", "nobody", "c1", "c2"]


def test_read_gives_typed_columns_in_request_order(store):
    store.upsert("customer_activity", _rows(), source_version=7, key_columns=["customer_id"], as_of=T0)
    result = store.read({"customer_activity": READ_KEYS, "never_published": ["c1", "c2"], "empty": []})
    table = result["customer_activity"]
    schema = store.schema("customer_activity")
    assert table.schema == pa.schema(
        [
            *schema,
            pa.field("_source_version", pa.int64()),
            pa.field("_published_at", pa.timestamp("us", tz="UTC")),
            pa.field("_found", pa.bool_()),
        ]
    )
    columns = table.to_pydict()
    assert columns["_found"] == [True, False, True, True]
    assert columns["customer_id"] == ["c2", None, "c1", "c2"]  # duplicates kept, missing keys null
    assert (
        columns["days_since_last_order"] == [None, None, 4, None]
        and table.column("days_since_last_order").type == pa.int32()
    )
    assert columns["ingested_at"] == [None, None, datetime(2026, 2, 28, 2, 0, 0, 1, tzinfo=UTC), None]
    assert columns["_source_version"] == [7, None, 7, 7]
    assert columns["_published_at"][2] == store.table_state("customer_activity")["published_at"]
    # NaN stays NaN and null stays null, as Arrow values (not only as Python floats).
    values = table.column("avg_order_value")
    assert values.null_count == 3 and math.isnan(values[2].as_py())
    assert table.column("orders_30d").to_pylist()[2] == 3.0 and table.column("orders_30d").null_count == 3
    assert result["never_published"].to_pydict() == {"_found": [False, False]}
    assert result["empty"].num_rows == 0
    assert (
        read_as_of(table) == T0
        and read_as_of(result["empty"]) is None
        and read_as_of(result["never_published"]) is None
    )
    store.upsert("without_as_of", _rows(), source_version=1, key_columns=["customer_id"])
    assert read_as_of(store.read({"without_as_of": ["c1"]})["without_as_of"]) is None
    no_keys = store.read({"customer_activity": []})["customer_activity"]
    assert no_keys.num_rows == 0 and no_keys.schema == table.schema


def test_read_agrees_with_get_many(store):
    store.upsert("a", _rows(), source_version=1, key_columns=["customer_id"])
    changed = pd.DataFrame(
        {
            "customer_id": ["c2", "c3"],
            "feature_ts": pd.to_datetime(["2026-03-01", "2026-03-02"], utc=True),
            "orders_30d": [5.0, 1.0],
            "loyal": [True, None],
        }
    )
    store.upsert("a", changed, source_version=2)  # a column added: older rows have none of it
    requests = {"a": ["c1", "c2", "c3", "c9", "c1"]}
    rows = store.get_many(requests)["a"]
    table = store.read(requests)["a"]
    assert table.column("loyal").type == pa.bool_()
    for i, (key, record) in enumerate(zip(requests["a"], table.to_pylist())):
        assert record.pop("_found") == (key in rows)
        expected = rows.get(key) or {}
        for name, value in record.items():
            want = expected.get(name)
            assert value == want or (isinstance(want, float) and math.isnan(want) and math.isnan(value)), (
                i,
                name,
                value,
                want,
            )
    assert table.column("loyal").to_pylist() == [None, True, None, None, None]


def test_the_base_class_read_builds_on_get_many(store):
    """A third-party store that only implements get/get_many still answers read()."""
    store.upsert("a", _rows(), source_version=1, key_columns=["customer_id"])
    default, own = OnlineStore.read(store, {"a": READ_KEYS, "z": ["c1"]}), store.read({"a": READ_KEYS, "z": ["c1"]})
    assert {t: default[t].schema for t in default} == {t: own[t].schema for t in own}
    assert {t: read_as_of(default[t]) for t in default} == {t: read_as_of(own[t]) for t in own}
    # repr: NaN equals NaN there (Arrow's equality says NaN != NaN).
    assert repr({t: default[t].to_pylist() for t in default}) == repr({t: own[t].to_pylist() for t in own})


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
    with pytest.raises(OnlineStoreError, match="must be 'sqlite', 'redis' or an OnlineStore subclass"):
        open_online_store({"type": "datetime.datetime"})
    with pytest.raises(OnlineStoreError, match="needs a 'path'"):
        open_online_store({"type": "sqlite"})
