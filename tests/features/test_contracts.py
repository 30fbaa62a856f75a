"""Feature contracts: the real contract files parse, the hash is stable, errors name table and key."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import yaml

from lakehouse_ml.features.contracts import ContractError, NullPolicy, parse_contract, parse_duration
from tests.conftest import PROJECT_ROOT

FEATURE_TABLES_DIR = PROJECT_ROOT / "conf" / "base" / "feature_tables"


def _raw(table: str) -> dict[str, Any]:
    return yaml.safe_load((FEATURE_TABLES_DIR / f"{table}.yml").read_text())["feature_tables"][table]


# --- the real contracts ------------------------------------------------------------------------


def test_customer_activity_contract():
    contract = parse_contract("customer_activity", _raw("customer_activity"))
    assert contract.table == "customer_activity" and contract.enabled
    assert (contract.owner, contract.grain, contract.refresh, contract.source) == (
        "ml-platform",
        "customer x day",
        "daily",
        "gold.customer_daily_activity",
    )
    assert contract.entity_keys == ("customer_id",)
    assert (contract.timestamp_key, contract.ingested_at_key) == ("feature_ts", "ingested_at")
    assert contract.feature_names == [
        "orders_7d",
        "orders_30d",
        "orders_90d",
        "net_spend_30d",
        "net_spend_90d",
        "avg_order_value_90d",
        "sessions_7d",
        "sessions_30d",
        "session_minutes_30d",
        "tickets_30d",
        "tickets_90d",
        "high_severity_tickets_90d",
        "days_since_last_order",
    ]
    orders = contract.feature("orders_7d")
    assert (orders.window, orders.freshness) == (timedelta(days=7), timedelta(days=2))
    assert orders.null_policy == NullPolicy("impute", 0)
    assert (orders.minimum, orders.maximum, orders.allowed_values) == (0.0, None, None)
    assert orders.time_semantics == "event_time" and orders.compute == {"sum": "orders"}
    assert contract.feature("avg_order_value_90d").null_policy == NullPolicy("keep")
    assert contract.feature("session_minutes_30d").compute == {"sum": "session_seconds", "divide_by": 60}
    days = contract.feature("days_since_last_order")
    assert (days.minimum, days.maximum, days.null_policy) == (0.0, 89.0, NullPolicy("impute", 999))
    with pytest.raises(KeyError, match="feature table 'customer_activity' has no feature 'nope'"):
        contract.feature("nope")


def test_customer_profile_contract():
    contract = parse_contract("customer_profile", _raw("customer_profile"))
    assert contract.feature_names == ["plan_tier", "monthly_price", "country", "channel", "signup_ts"]
    tier = contract.feature("plan_tier")
    assert tier.allowed_values == ("basic", "standard", "premium")
    assert tier.null_policy == NullPolicy("impute", "unknown") and tier.window is None
    price = contract.feature("monthly_price")
    assert (price.minimum, price.maximum, price.null_policy) == (0.0, 1000.0, NullPolicy("drop"))
    assert contract.feature("country").freshness == timedelta(days=3650)
    assert contract.feature("signup_ts").null_policy == NullPolicy("keep")


def test_column_comments_describe_each_feature():
    activity = parse_contract("customer_activity", _raw("customer_activity")).column_comments()
    assert list(activity) == parse_contract("customer_activity", _raw("customer_activity")).feature_names
    assert activity["orders_7d"] == (
        "sum of orders over the window; unit=orders; window=7d; freshness=2d; nulls=impute(0); range=[0, inf]"
    )
    assert activity["avg_order_value_90d"] == (
        "net_spend_90d / orders_90d; null without orders; unit=EUR; window=90d; freshness=2d; "
        "nulls=keep; range=[0, inf]"
    )
    profile = parse_contract("customer_profile", _raw("customer_profile")).column_comments()
    assert profile["plan_tier"] == (
        "plan tier from this change on; unit=category; freshness=3650d; nulls=impute(unknown); "
        "allowed=['basic', 'standard', 'premium']"
    )
    assert profile["monthly_price"].endswith("freshness=3650d; nulls=drop; range=[0, 1000]")


def test_table_properties_carry_the_contract():
    contract = parse_contract("customer_activity", _raw("customer_activity"))
    assert contract.table_properties() == {
        "lakehouse_ml.contract.table": "customer_activity",
        "lakehouse_ml.contract.hash": contract.hash,
        "lakehouse_ml.contract.owner": "ml-platform",
        "lakehouse_ml.contract.entity_keys": "customer_id",
        "lakehouse_ml.contract.timestamp_key": "feature_ts",
        "lakehouse_ml.contract.grain": "customer x day",
        "lakehouse_ml.contract.refresh": "daily",
        "lakehouse_ml.contract.description": (
            "Behavioural aggregates of each customer over trailing windows of whole days."
        ),
        **{f"lakehouse_ml.feature.{name}": text for name, text in contract.column_comments().items()},
    }
    assert contract.table_properties()["lakehouse_ml.feature.orders_7d"] == (
        "sum of orders over the window; unit=orders; window=7d; freshness=2d; nulls=impute(0); range=[0, inf]"
    )


def test_as_record_is_json_able_with_hash():
    record = parse_contract("customer_profile", _raw("customer_profile")).as_record()
    assert "raw" not in record and len(record["hash"]) == 16
    assert record["features"][0]["name"] == "plan_tier"
    assert record["features"][0]["null_policy"] == {"action": "impute", "value": "unknown"}


# --- the hash ----------------------------------------------------------------------------------


def _reversed(value: Any) -> Any:
    """The same mapping with every dict's keys in reverse order."""
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(list(value))}
    return value


@pytest.mark.parametrize("table", ["customer_activity", "customer_profile"])
def test_hash_is_stable_and_key_order_independent(table):
    raw = _raw(table)
    first = parse_contract(table, raw).hash
    assert len(first) == 16 and int(first, 16) >= 0
    assert parse_contract(table, _raw(table)).hash == first
    assert list(_reversed(raw)) != list(raw)
    assert parse_contract(table, _reversed(raw)).hash == first


def _set(path: str, value: Any):
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            raw = raw[key]
        raw[last] = value

    return change


PROMISE_CHANGES = {
    "owner": _set("owner", "someone-else"),
    "entity_keys": _set("entity_keys", ["customer_id", "region"]),
    "timestamp_key": _set("timestamp_key", "as_of"),
    "ingested_at_key": _set("ingested_at_key", "loaded_at"),
    "grain": _set("grain", "customer x hour"),
    "refresh": _set("refresh", "hourly"),
    "source": _set("source", "gold.other"),
    "enabled": _set("enabled", False),
    "time_semantics": _set("time_semantics", "ingestion_time"),
    "window": _set("features.orders_7d.window", "8 days"),
    "unit": _set("features.orders_7d.unit", "items"),
    "freshness": _set("features.orders_7d.freshness", "3 days"),
    "null_policy": _set("features.orders_7d.null_policy", "keep"),
    "impute_value": _set("features.orders_7d.null_policy", {"impute": 1}),
    "range": _set("features.orders_7d.range", [0, 100]),
    "allowed_values": _set("features.orders_7d.allowed_values", [0, 1]),
    "compute": _set("features.orders_7d.compute", {"sum": "items"}),
    "feature_added": _set(
        "features.orders_1d",
        {
            "window": "1 day",
            "unit": "orders",
            "freshness": "2 days",
            "null_policy": "keep",
            "compute": {"sum": "orders"},
        },
    ),
    "feature_removed": lambda raw: raw["features"].pop("tickets_90d"),
}


@pytest.mark.parametrize("change", PROMISE_CHANGES.values(), ids=PROMISE_CHANGES.keys())
def test_hash_changes_when_a_promise_changes(change):
    before = parse_contract("customer_activity", _raw("customer_activity")).hash
    raw = copy.deepcopy(_raw("customer_activity"))
    change(raw)
    assert parse_contract("customer_activity", raw).hash != before


# --- errors ------------------------------------------------------------------------------------


def _broken(change) -> dict[str, Any]:
    raw = copy.deepcopy(_raw("customer_activity"))
    change(raw)
    return raw


WHERE = "feature_tables/customer_activity.yml: customer_activity"
CONTRACT_ERRORS = {
    "missing_owner": (lambda raw: raw.pop("owner"), f"{WHERE}: 'owner' is required"),
    "empty_owner": (_set("owner", ""), f"{WHERE}: 'owner' is required"),
    "missing_entity_keys": (_set("entity_keys", []), f"{WHERE}: 'entity_keys' is required"),
    "missing_features": (lambda raw: raw.pop("features"), f"{WHERE}: 'features' is required"),
    "missing_unit": (
        lambda raw: raw["features"]["orders_7d"].pop("unit"),
        f"{WHERE}.features.orders_7d: 'unit' is required",
    ),
    "missing_compute": (
        lambda raw: raw["features"]["orders_7d"].pop("compute"),
        f"{WHERE}.features.orders_7d: 'compute' is required",
    ),
    "bad_freshness": (
        _set("features.orders_7d.freshness", "2 weeks"),
        f"{WHERE}.features.orders_7d.freshness: expected a duration like '7 days' or '12 hours', got '2 weeks'",
    ),
    "bad_window": (
        _set("features.orders_7d.window", "seven days"),
        f"{WHERE}.features.orders_7d.window: expected a duration",
    ),
    "bad_null_policy": (
        _set("features.orders_7d.null_policy", "zero"),
        f"{WHERE}.features.orders_7d.null_policy: expected keep, drop or {{impute: <value>}}, got 'zero'",
    ),
    "bad_null_policy_mapping": (
        _set("features.orders_7d.null_policy", {"impute": 0, "drop": True}),
        f"{WHERE}.features.orders_7d.null_policy: expected keep, drop or {{impute: <value>}}",
    ),
    "bad_time_semantics": (
        _set("features.orders_7d.time_semantics", "processing_time"),
        f"{WHERE}.features.orders_7d.time_semantics: expected one of ('event_time', "
        "'ingestion_time'), got 'processing_time'",
    ),
    "bad_table_time_semantics": (
        _set("time_semantics", "wall_clock"),
        f"{WHERE}.features.orders_7d.time_semantics: expected one of",
    ),
    "bad_range_length": (
        _set("features.orders_7d.range", [0]),
        f"{WHERE}.features.orders_7d.range: expected [min, max] (null for open), got [0]",
    ),
    "bad_range_type": (
        _set("features.orders_7d.range", "0..10"),
        f"{WHERE}.features.orders_7d.range: expected [min, max] (null for open), got '0..10'",
    ),
    "missing_kind": (lambda raw: raw.pop("kind"), f"{WHERE}: 'kind' is required"),
    "unknown_kind": (
        _set("kind", "hourly"),
        f"{WHERE}.kind: expected one of ['changes', 'daily_windows'], got 'hourly'",
    ),
    "compute_of_another_kind": (
        _set("features.orders_7d.compute", {"column": "orders"}),
        f"{WHERE}.features.orders_7d.compute: a 'daily_windows' table computes features from keys",
    ),
    "window_missing": (
        lambda raw: raw["features"]["orders_7d"].pop("window"),
        f"{WHERE}.features.orders_7d.compute: a 'daily_windows' feature needs a `window`",
    ),
    "ratio_of_unknown_features": (
        _set("features.avg_order_value_90d.compute", {"ratio": ["net_spend_90d", "nope"]}),
        f"{WHERE}.features.avg_order_value_90d.compute.ratio: expected [numerator, denominator], two other features",
    ),
    "every_feature_null": (
        lambda raw: raw.update(features={name: None for name in raw["features"]}),
        f"{WHERE}.features: every feature is null",
    ),
}


def test_an_environment_drops_a_feature_with_null():
    raw = _raw("customer_activity")
    raw["features"]["tickets_90d"] = None
    contract = parse_contract("customer_activity", raw)
    assert "tickets_90d" not in contract.feature_names and "tickets_30d" in contract.feature_names
    assert contract.hash != parse_contract("customer_activity", _raw("customer_activity")).hash


@pytest.mark.parametrize(("change", "message"), CONTRACT_ERRORS.values(), ids=CONTRACT_ERRORS.keys())
def test_contract_errors_name_table_and_key(change, message):
    with pytest.raises(ContractError) as raised:
        parse_contract("customer_activity", _broken(change))
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)


def test_contract_must_be_a_mapping():
    with pytest.raises(ContractError, match=r"feature_tables/t\.yml: t: expected a mapping, got list"):
        parse_contract("t", ["not", "a", "mapping"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 days", timedelta(days=7)),
        ("1 day", timedelta(days=1)),
        ("12 hours", timedelta(hours=12)),
        (" 30 minutes ", timedelta(minutes=30)),
        (None, None),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text, "here") == expected


def test_sub_day_durations_are_described_faithfully():
    raw = _broken(_set("features.orders_7d.window", "12 hours"))
    raw["features"]["orders_7d"]["freshness"] = "30 minutes"
    comment = parse_contract("customer_activity", raw).column_comments()["orders_7d"]
    assert "window=0d" not in comment and "freshness=0h" not in comment


def test_loose_declarations_are_refused_with_the_table_and_key(spec_factory=None):
    import copy as _copy

    import yaml as _yaml

    from lakehouse_ml.features.contracts import ContractError, parse_contract
    from tests.helpers import PROJECT_ROOT as _root

    raw = _yaml.safe_load((_root / "conf/base/feature_tables/customer_profile.yml").read_text())["feature_tables"][
        "customer_profile"
    ]
    cases = {
        "entity_keys": ("entity_keys", "customer_id", "expected a non-empty list"),
        "enabled": ("enabled", "false", "expected true or false"),
    }
    for _key, (field, value, message) in cases.items():
        broken = _copy.deepcopy(raw)
        broken[field] = value
        with pytest.raises(ContractError, match=f"customer_profile.*{field}.*{message}"):
            parse_contract("customer_profile", broken)
    broken = _copy.deepcopy(raw)
    broken["features"]["monthly_price"]["range"] = [10, 0]
    with pytest.raises(ContractError, match="monthly_price.range: min 10 is above max 0"):
        parse_contract("customer_profile", broken)
    broken["features"]["monthly_price"]["range"] = ["a", 0]
    with pytest.raises(ContractError, match="monthly_price.range: range bounds must be numbers"):
        parse_contract("customer_profile", broken)
    # the hash is fixed at parse time and covers the table name
    contract = parse_contract("customer_profile", raw)
    before = contract.hash
    raw["owner"] = "someone else"
    assert contract.hash == before
    assert parse_contract("other_table", contract.raw).hash != before
