"""Online feature vectors from hand-made store rows, against hand-computed expectations: the
point-in-time rules (inclusive bounds, rows from the future, rows known later), missing keys,
nulls kept (no imputation), tenure as of the request, and batch inference's rejection wording."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.online.store import SQLiteOnlineStore
from lakehouse_ml.online.vectors import NotPublishedError, OnlineFeatureLookup, value_text

UTC = timezone.utc
AT = datetime(2026, 3, 1, tzinfo=UTC)
WHEN = AT.isoformat()  # 2026-03-01T00:00:00+00:00
US = timedelta(microseconds=1)


def _contract(table: str, features: dict) -> dict:
    return {
        "description": "test",
        "owner": "tests",
        "entity_keys": ["customer_id"],
        "timestamp_key": "feature_ts",
        "ingested_at_key": "ingested_at",
        "grain": "customer x day",
        "refresh": "daily",
        "source": "tests",
        "kind": "changes",
        "features": {name: {"compute": {"column": name}, **spec} for name, spec in features.items()},
    }


ACTIVITY = _contract(
    "customer_activity",
    {
        "orders_30d": {"unit": "orders", "freshness": "2 days", "null_policy": {"impute": 0}, "range": [0, None]},
        "days_since_last_order": {
            "unit": "days",
            "freshness": "3 days",
            "null_policy": {"impute": 999},
            "range": [0, 89],
        },
    },
)
PROFILE = _contract(
    "customer_profile",
    {
        "plan_tier": {
            "unit": "category",
            "freshness": "3650 days",
            "null_policy": {"impute": "unknown"},
            "allowed_values": ["basic", "premium"],
        },
        "monthly_price": {"unit": "EUR", "freshness": "3650 days", "null_policy": "drop", "range": [0, 1000]},
        "signup_ts": {"unit": "timestamp", "freshness": "3650 days", "null_policy": "keep"},
    },
)
FEATURE_TABLES = {"customer_activity": ACTIVITY, "customer_profile": PROFILE}
LOOKUPS = {
    "customer_activity": {"features": None, "lookback_window": None, "filter_by_ingested_at": True},
    "customer_profile": {"features": None, "lookback_window": None, "filter_by_ingested_at": True},
}
INPUTS = [
    "customer_activity__orders_30d",
    "customer_activity__days_since_last_order",
    "customer_profile__plan_tier",
    "customer_profile__monthly_price",
    "tenure_days",
]


def _activity(customer, ts, orders=2.0, days=5, ingested=None):
    return {
        "customer_id": customer,
        "feature_ts": ts,
        "ingested_at": ingested or ts - timedelta(hours=1),
        "orders_30d": orders,
        "days_since_last_order": days,
    }


def _profile(customer, ts, tier="basic", price=9.99, signup=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)):
    return {
        "customer_id": customer,
        "feature_ts": ts,
        "ingested_at": ts,
        "plan_tier": tier,
        "monthly_price": price,
        "signup_ts": signup,
    }


def _frame(rows: list[dict], ints: list[str], floats: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in floats:  # as Spark's Arrow gives them: NaN is a value, not a null
        frame[column] = pd.arrays.ArrowExtensionArray(pa.array(frame[column].astype(object).tolist(), pa.float64()))
    for column in ints:
        frame[column] = pd.array(frame[column], dtype="Int32")
    for column in ("feature_ts", "ingested_at", "signup_ts"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


@pytest.fixture
def store(tmp_path):
    opened = SQLiteOnlineStore(str(tmp_path / "store.db"))
    old = AT - timedelta(days=400)
    opened.upsert(
        "customer_activity",
        _frame(
            [
                _activity("fresh", AT - timedelta(days=2)),  # exactly at the window: used
                _activity("stale", AT - timedelta(days=2) - US),  # 1 µs too old: not used
                _activity("now", AT, orders=7.0, days=0, ingested=AT),  # stamped and known at AT: used
                _activity("known_later", AT, ingested=AT + US),  # known after AT: not used
                _activity("future", AT + timedelta(days=1)),  # stamped after AT: not used
                _activity("bad", AT - timedelta(days=1), orders=-3.0, days=None),  # out of range; a null kept
                _activity("nan", AT - timedelta(days=1), orders=math.nan),
                _activity("no_profile", AT - timedelta(days=1)),
            ],
            ["days_since_last_order"],
            floats=("orders_30d",),
        ),
        source_version=4,
        key_columns=["customer_id"],
    )
    opened.upsert(
        "customer_profile",
        _frame(
            [_profile(customer, old) for customer in ("fresh", "stale", "now", "known_later", "future", "nan")]
            + [_profile("bad", old, tier="platinum", price=None), _profile("only_profile", old)],
            [],
        ),
        source_version=9,
        key_columns=["customer_id"],
    )
    yield opened
    opened.close()


TENURE = {
    "compute": {"days_between": ["customer_profile__signup_ts", "lookup_time"]},
    "type": "integer",
    "unit": "days",
    "range": [0, 36500],
    "null_policy": "keep",
}


def _lookup(store, lookups=LOOKUPS, on_demand=None) -> OnlineFeatureLookup:
    return OnlineFeatureLookup.from_params(store, FEATURE_TABLES, lookups, on_demand or {"tenure_days": TENURE})


def test_vectors_follow_the_point_in_time_rules_at_the_request_time(store):
    ids = ["fresh", "stale", "now", "known_later", "future", "bad", "fresh"]
    vectors, _ = _lookup(store).vectors(ids, AT, INPUTS)
    assert list(vectors.index) == ids and vectors.index.name == "customer_id"
    assert list(vectors.columns) == INPUTS
    orders = vectors["customer_activity__orders_30d"].to_numpy()
    # No imputation and no clipping (the model's pipeline imputes per contract, as in training).
    np.testing.assert_array_equal(orders, [2.0, np.nan, 7.0, np.nan, np.nan, -3.0, 2.0])
    days = vectors["customer_activity__days_since_last_order"]
    assert days["fresh"].tolist() == [5.0, 5.0] and math.isnan(
        days["bad"]
    )  # null kept (contract imputes 999 in the model)
    # Profile rows are years old but within their 3650-day freshness; tenure counts whole UTC days.
    assert vectors["customer_profile__plan_tier"].tolist() == [
        "basic",
        "basic",
        "basic",
        "basic",
        "basic",
        "platinum",
        "basic",
    ]
    assert vectors.loc["now", "tenure_days"] == (AT.date() - datetime(2025, 12, 31).date()).days == 60


def test_types_are_the_training_sets_an_int_with_nulls_becomes_float(store):
    lookup = _lookup(store)
    complete, _ = lookup.vectors(["fresh", "now"], AT, INPUTS)
    assert complete.dtypes.astype(str).tolist() == ["float64", "int32", "object", "float64", "int32"]
    with_nulls, _ = lookup.vectors(["fresh", "stale"], AT, INPUTS)
    assert with_nulls.dtypes.astype(str).tolist() == ["float64", "float64", "object", "float64", "int32"]
    # The conversion that reads the training set (Delta → Arrow → pandas) gives the same dtypes.
    arrow = pa.table({"d": pa.array([5, None], pa.int32())}).to_pandas()
    assert arrow["d"].dtype == with_nulls["customer_activity__days_since_last_order"].dtype


def test_problems_are_worded_like_batch_inference_rejections(store):
    ids = ["fresh", "stale", "now", "known_later", "future", "bad", "nan", "no_profile", "only_profile", "nobody"]
    _, problems = _lookup(store).vectors(ids, AT, INPUTS)
    none = f"customer_activity.feature_ts: freshness expected a feature row at most 2d old at {WHEN}, got none"
    assert set(problems) == {"stale", "known_later", "future", "bad", "nan", "no_profile", "only_profile", "nobody"}
    assert problems["stale"] == [none]
    assert problems["known_later"] == [
        f"customer_activity.feature_ts: point_in_time expected a row stamped and known by {WHEN}, got feature_ts "
        "2026-03-01 00:00:00, ingested_at 2026-03-01 00:00:00.000001 (the online store was published after the request time)",
        none,
    ]
    assert problems["future"][1:] == [none] and "got feature_ts 2026-03-02 00:00:00" in problems["future"][0]
    assert problems["bad"] == [
        "customer_activity.orders_30d: range expected values >= 0, got -3.0",
        "customer_profile.plan_tier: allowed_values expected one of ['basic', 'premium'], got 'platinum'",
        "customer_profile.monthly_price: null_policy expected a value (policy drop), got null",
    ]
    assert problems["nan"] == ["customer_activity.orders_30d: range expected values >= 0, got NaN"]
    assert problems["no_profile"] == [
        f"customer_profile.feature_ts: freshness expected a feature row at most 3650d old at {WHEN}, got none"
    ]
    assert problems["only_profile"] == [none]
    assert problems["nobody"] == ["customer_id: not in the online store"]


def test_a_longer_lookback_keeps_a_row_the_contract_calls_stale_and_says_how_old(store):
    """As in batch inference: the lookback decides which row is used, freshness whether it is fresh."""
    lookups = {**LOOKUPS, "customer_activity": {**LOOKUPS["customer_activity"], "lookback_window": "5 days"}}
    vectors, problems = _lookup(store, lookups).vectors(["stale"], AT, INPUTS)
    assert vectors.loc["stale", "customer_activity__orders_30d"] == 2.0
    assert problems == {
        "stale": [f"customer_activity.orders_30d: freshness expected at most 2d old at {WHEN}, got 2.0 days"]
    }


def test_only_the_requested_inputs_are_judged(store):
    vectors, problems = _lookup(store).vectors(["bad"], AT, ["customer_profile__plan_tier"])
    assert list(vectors.columns) == ["customer_profile__plan_tier"]
    assert problems == {
        "bad": ["customer_profile.plan_tier: allowed_values expected one of ['basic', 'premium'], got 'platinum'"]
    }


def test_bad_requests_say_what_is_wrong(store):
    lookup = _lookup(store)
    with pytest.raises(ValueError, match=r"input columns \['customer_activity__sessions_7d'\] are not produced"):
        lookup.vectors(["fresh"], AT, ["customer_activity__sessions_7d"])
    with pytest.raises(ValueError, match="must carry a time zone"):
        lookup.vectors(["fresh"], datetime(2026, 3, 1), INPUTS)
    with pytest.raises(ValueError, match=r"unknown \['speed'\]"):
        OnlineFeatureLookup.from_params(store, FEATURE_TABLES, LOOKUPS, rules=["speed"])


def test_without_a_time_vectors_are_as_of_the_latest_publish_read_with_the_rows(store, tmp_path):
    """``at`` None (``serving.request_time: online_store``): the latest as-of of the tables, taken
    from the read that gives the rows (a publish in between cannot pair new rows with an old time)."""
    ids = ["fresh", "stale", "now", "known_later", "future", "bad", "nan", "no_profile", "only_profile", "nobody"]
    lookup = _lookup(store)
    with pytest.raises(NotPublishedError, match="no table .* has been published with an as-of"):
        lookup.vectors(ids, None, INPUTS)  # the fixture publishes without an as-of
    activity = store.read({"customer_activity": ["fresh"]})["customer_activity"].drop_columns(
        ["_source_version", "_published_at", "_found"]
    )
    store.upsert(
        "customer_activity",
        activity.to_pandas(),
        source_version=5,
        key_columns=["customer_id"],
        as_of=AT - timedelta(days=1),
    )
    store.upsert(
        "customer_profile",
        store.read({"customer_profile": []})["customer_profile"]
        .drop_columns(["_source_version", "_published_at", "_found"])
        .to_pandas(),
        source_version=10,
        key_columns=["customer_id"],
        as_of=AT,
    )
    at_publish, at_given = lookup.vectors(ids, None, INPUTS), lookup.vectors(ids, AT, INPUTS)
    pd.testing.assert_frame_equal(at_publish[0], at_given[0])
    assert at_publish[1] == at_given[1]
    empty = SQLiteOnlineStore(str(tmp_path / "nothing.db"))
    with pytest.raises(NotPublishedError):
        _lookup(empty).vectors(["c1"], None, INPUTS)
    empty.close()


def test_a_table_never_published_gives_nulls_typed_from_the_contract(tmp_path):
    empty = SQLiteOnlineStore(str(tmp_path / "empty.db"))
    vectors, problems = _lookup(empty).vectors(["c1"], AT, INPUTS)
    assert vectors.dtypes.astype(str).tolist() == ["float64", "float64", "object", "float64", "float64"]
    assert vectors.isna().all().all() and problems == {"c1": ["customer_id: not in the online store"]}
    empty.close()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-3.0, "-3.0"),
        (1e7, "10000000.0"),
        (1.5e-5, "0.000015"),
        (math.nan, "NaN"),
        (5, "5"),
        (None, "null"),
        ("x", "x"),
    ],
)
def test_values_are_printed_as_the_engine_prints_them(value, text):
    """Spark's cast to string on the embedded engine (checked there for these values)."""
    assert value_text(value) == text


def test_on_demand_features_are_judged_by_their_declaration_and_need_their_inputs_looked_up(store):
    narrow = {"tenure_days": {**TENURE, "range": [0, 59]}}
    vectors, problems = _lookup(store, on_demand=narrow).vectors(["now", "no_profile"], AT, ["tenure_days"])
    assert vectors["tenure_days"].tolist()[0] == 60 and math.isnan(vectors["tenure_days"].tolist()[1])
    assert problems["now"] == ["tenure_days: range expected values in [0, 59], got 60"]
    without_signup = {**LOOKUPS, "customer_profile": {**LOOKUPS["customer_profile"], "features": ["plan_tier"]}}
    lookup = _lookup(store, without_signup)
    assert "tenure_days" not in lookup.output_columns()
    with pytest.raises(ValueError, match=r"input columns \['tenure_days'\] are not produced"):
        lookup.vectors(["now"], AT, ["tenure_days"])


def test_contracts_come_parsed_from_the_raw_parameters(store):
    lookup = _lookup(store)
    assert lookup.contracts["customer_activity"] == parse_contract("customer_activity", ACTIVITY)
    assert [lk.lookback_window for lk in lookup.lookups] == [timedelta(days=2), timedelta(days=3650)]
