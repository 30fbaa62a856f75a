"""Each contract rule on hand-made rows (through the Arrow compiler; test_expressions shows Spark
gives the same): when it breaks, what it promises and the one message template."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.features.expressions_arrow import to_arrow
from lakehouse_ml.features.rules import (
    RULES,
    allowed_values_rule,
    bounds_text,
    feature_rules,
    freshness_rules,
    null_policy_rule,
    number_text,
    range_rule,
    range_text,
    table_rules,
)

UTC = timezone.utc
AT = datetime(2026, 3, 1, tzinfo=UTC)
WHEN = AT.isoformat()


def _contract(table="t", enabled=True, **features):
    return parse_contract(
        table,
        {
            "description": "test",
            "owner": "tests",
            "entity_keys": ["k"],
            "timestamp_key": "feature_ts",
            "grain": "k x day",
            "refresh": "daily",
            "source": "tests",
            "kind": "changes",
            "enabled": enabled,
            "features": {
                name: {"compute": {"column": name}, "unit": "n", "freshness": "2 days", "null_policy": "keep", **spec}
                for name, spec in features.items()
            },
        },
    )


def _reasons(rule, **columns):
    table = pa.table(columns)
    return to_arrow(rule.reason(), table, AT).to_pylist()


def test_range_breaks_outside_the_bounds_and_on_nan_but_not_on_null():
    spec = _contract(x={"range": [0, 89]}).feature("x")
    rule = range_rule(spec, "x", "t.x")
    assert (rule.rule, rule.expected, rule.numeric_column) == ("range", "values in [0, 89]", "x")
    assert _reasons(rule, x=pa.array([0.0, 89.0, -0.5, 90.0, math.nan, None])) == [
        None,
        None,
        "t.x: range expected values in [0, 89], got -0.5",
        "t.x: range expected values in [0, 89], got 90.0",
        "t.x: range expected values in [0, 89], got NaN",
        None,
    ]
    assert _reasons(rule, x=pa.array([90, None], pa.int32())) == ["t.x: range expected values in [0, 89], got 90", None]


def test_an_open_range_names_its_one_bound_and_no_range_is_no_rule():
    contract = _contract(low={"range": [0, None]}, high={"range": [None, 1000.5]}, free={})
    assert range_rule(contract.feature("low"), "low", "t.low").expected == "values >= 0"
    high = range_rule(contract.feature("high"), "high", "t.high")
    assert high.expected == "values <= 1000.5"
    assert _reasons(high, high=pa.array([-1e21, 1e21])) == [None, "t.high: range expected values <= 1000.5, got 1e21"]
    assert range_rule(contract.feature("free"), "free", "t.free") is None


def test_allowed_values_quote_the_value_and_list_the_declared_values():
    spec = _contract(tier={"allowed_values": ["basic", "premium", None]}).feature("tier")
    rule = allowed_values_rule(spec, "tier", "t.tier")
    assert rule.expected == "one of ['basic', 'premium', None]" and rule.numeric_column is None
    assert _reasons(rule, tier=pa.array(["basic", "gold", None, ""])) == [
        None,
        "t.tier: allowed_values expected one of ['basic', 'premium', None], got 'gold'",
        None,
        "t.tier: allowed_values expected one of ['basic', 'premium', None], got ''",
    ]
    only_null = allowed_values_rule(_contract(tier={"allowed_values": [None]}).feature("tier"), "tier", "t.tier")
    assert _reasons(only_null, tier=pa.array(["basic", None])) == [
        "t.tier: allowed_values expected one of [None], got 'basic'",
        None,
    ]
    assert allowed_values_rule(_contract(tier={}).feature("tier"), "tier", "t.tier") is None


def test_null_policy_drop_breaks_on_a_null_in_a_row_that_exists():
    contract = _contract(price={"null_policy": "drop"}, kept={}, imputed={"null_policy": {"impute": 0}})
    rule = null_policy_rule(contract.feature("price"), "price", "t.price", "ts")
    assert rule.expected == "a value (policy drop)"
    stamps = pa.array([AT, AT, None], pa.timestamp("us", tz="UTC"))
    assert _reasons(rule, price=pa.array([1.0, None, None]), ts=stamps) == [
        None,
        "t.price: null_policy expected a value (policy drop), got null",
        None,  # no row: freshness says so
    ]
    assert null_policy_rule(contract.feature("kept"), "kept", "t.kept", "ts") is None
    assert null_policy_rule(contract.feature("imputed"), "imputed", "t.imputed", "ts") is None


def test_freshness_reports_a_missing_row_and_a_stale_one_with_its_age_under_the_tightest_freshness():
    contract = _contract(slow={"freshness": "3 days"}, fast={"freshness": "36 hours"})
    missing, stale = freshness_rules(contract, contract.features, "ts", AT)
    assert missing.where == "t.feature_ts" and stale.where == "t.fast"
    stamps = pa.array(
        [
            None,
            AT - timedelta(hours=36),
            AT - timedelta(hours=36, microseconds=1),
            AT - timedelta(days=3, seconds=432),
            AT + timedelta(days=1),
        ],
        pa.timestamp("us", tz="UTC"),
    )
    assert _reasons(missing, ts=stamps) == [
        f"t.feature_ts: freshness expected a feature row at most 36h old at {WHEN}, got none",
        *[None] * 4,
    ]
    assert _reasons(stale, ts=stamps) == [
        None,
        None,
        f"t.fast: freshness expected at most 36h old at {WHEN}, got 1.5 days",
        f"t.fast: freshness expected at most 36h old at {WHEN}, got 3.01 days",
        None,
    ]


def test_feature_rules_come_freshness_first_then_per_feature_and_only_the_selected_ones():
    contract = _contract(a={"range": [0, 1], "null_policy": "drop"}, b={"allowed_values": ["x"]})
    every = feature_rules(contract, list(contract.features), RULES, AT)
    assert [(r.rule, r.where) for r in every] == [
        ("freshness", "t.feature_ts"),
        ("freshness", "t.a"),
        ("range", "t.a"),
        ("null_policy", "t.a"),
        ("allowed_values", "t.b"),
    ]
    assert every[2].numeric_column == "t__a"  # the training set's column name by default
    assert [r.rule for r in feature_rules(contract, [contract.feature("b")], ["range", "allowed_values"], AT)] == [
        "allowed_values"
    ]
    bare = feature_rules(contract, [contract.feature("a")], ["range"], AT, column=lambda table, feature: feature)
    assert bare[0].numeric_column == "a"


def test_table_rules_judge_only_used_features_of_enabled_tables():
    contracts = {
        "t": _contract(a={"range": [0, 1]}, b={"range": [0, 1]}),
        "off": _contract("off", enabled=False, c={"range": [0, 1]}),
    }
    rules = table_rules(contracts, ["t__b", "off__c", "tenure_days"], ["range"], AT)
    assert [(r.rule, r.where) for r in rules] == [("range", "t.b")]
    assert table_rules(contracts, ["tenure_days"], RULES, AT) == []


@pytest.mark.parametrize(
    ("minimum", "maximum", "text"),
    [
        (0, 89, "in [0, 89]"),
        (0.0, None, ">= 0"),
        (None, 1000, "<= 1000"),
        (None, None, ""),
        (0.5, 1e16, "in [0.5, 1e+16]"),
    ],
)
def test_bounds_are_written_once_for_every_consumer(minimum, maximum, text):
    assert bounds_text(minimum, maximum) == text


def test_numbers_in_messages_drop_a_trailing_zero():
    assert [number_text(v) for v in (3.0, -2, 0.25, None)] == ["3", "-2", "0.25", "null"]
    assert range_text(_contract(x={"range": [-1.5, 2]}).feature("x")) == "values in [-1.5, 2]"
