"""Validation of feature table frames against their contracts, on tiny hand-made frames.

Every expected number below is worked out by hand from the rows in the test.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime

import pandas as pd
import pytest
import yaml

from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.features.validation import (
    SUMMARY_COLUMNS,
    FeatureContractViolation,
    Violation,
    apply_null_policy,
    check_contract,
    enforce,
    feature_summaries,
    summary_metrics,
)
from tests.conftest import PROJECT_ROOT

D1, D2, D3 = datetime(2024, 1, 2), datetime(2024, 1, 3), datetime(2024, 1, 4)
SCHEMA = (
    "customer_id bigint, feature_ts timestamp, ingested_at timestamp, "
    "orders_7d bigint, spend double, plan_tier string, avg_value double"
)
# orders_7d: impute 0, range [0, 10]; spend: drop, range [0, open); plan_tier: impute 'unknown',
# allowed basic/premium; avg_value: keep, no range.
CLEAN = [
    (1, D1, D1, 1, 10.0, "basic", 10.0),
    (1, D2, D2, 2, 20.0, "premium", 10.0),
    (2, D1, D1, 3, 30.0, "basic", 10.0),
    (2, D2, D2, None, 40.0, None, None),
    (3, D1, D1, 4, 50.0, "basic", 12.5),
]


def _raw() -> dict:
    return {
        "description": "test table",
        "owner": "tests",
        "entity_keys": ["customer_id"],
        "timestamp_key": "feature_ts",
        "ingested_at_key": "ingested_at",
        "grain": "customer x day",
        "refresh": "daily",
        "source": "gold.test",
        "kind": "changes",
        "features": {
            "orders_7d": {
                "window": "7 days",
                "unit": "orders",
                "freshness": "2 days",
                "null_policy": {"impute": 0},
                "range": [0, 10],
                "compute": {"column": "orders"},
            },
            "spend": {
                "unit": "EUR",
                "freshness": "2 days",
                "null_policy": "drop",
                "range": [0, None],
                "compute": {"column": "net"},
            },
            "plan_tier": {
                "unit": "category",
                "freshness": "400 days",
                "null_policy": {"impute": "unknown"},
                "allowed_values": ["basic", "premium"],
                "compute": {"column": "plan_tier"},
            },
            "avg_value": {
                "unit": "EUR",
                "freshness": "2 days",
                "null_policy": "keep",
                "compute": {"column": "avg_value"},
            },
        },
    }


CONTRACT = parse_contract("t", _raw())


def _frame(spark, rows, schema=SCHEMA):
    return spark.createDataFrame(rows, schema)


def _check(frame):
    return check_contract(frame, CONTRACT, feature_summaries(frame, CONTRACT))


COLUMNS = [column.split()[0] for column in SCHEMA.split(", ")]


def _with(column: str, values: list) -> list[tuple]:
    """Rows like CLEAN[0] with ``column`` set to each value in turn; customer_id 1..n keeps keys unique."""
    index = COLUMNS.index(column)
    return [
        tuple(n if i == 0 else value if i == index else base for i, base in enumerate(CLEAN[0]))
        for n, value in enumerate(values, start=1)
    ]


# --- feature_summaries -------------------------------------------------------------------------


def test_summaries_numeric_and_categorical_exact(spark):
    summaries = feature_summaries(_frame(spark, CLEAN), CONTRACT)
    assert list(summaries.columns) == SUMMARY_COLUMNS
    assert list(summaries["feature"]) == ["orders_7d", "spend", "plan_tier", "avg_value"]
    assert set(summaries["table"]) == {"t"} and set(summaries["contract_hash"]) == {CONTRACT.hash}
    by = summaries.set_index("feature")

    orders = by.loc["orders_7d"]  # 1, 2, 3, null, 4
    assert (orders["rows"], orders["nulls"], orders["distinct"]) == (5, 1, 4)
    assert orders["null_rate"] == pytest.approx(0.2)
    assert (orders["min"], orders["max"], orders["mean"]) == (1.0, 4.0, 2.5)
    assert orders["top_values"] is None

    spend = by.loc["spend"]  # 10, 20, 30, 40, 50: the median is 30 under any definition
    assert (spend["nulls"], spend["null_rate"], spend["distinct"]) == (0, 0.0, 5)
    assert (spend["min"], spend["max"], spend["mean"], spend["p50"]) == (10.0, 50.0, 30.0, 30.0)

    avg = by.loc["avg_value"]  # 10, 10, 10, null, 12.5
    assert (avg["nulls"], avg["distinct"], avg["min"], avg["max"]) == (1, 2, 10.0, 12.5)
    assert avg["mean"] == pytest.approx(42.5 / 4)

    tier = by.loc["plan_tier"]  # basic x3, premium, null
    assert (tier["rows"], tier["nulls"], tier["distinct"]) == (5, 1, 2)
    assert tier["null_rate"] == pytest.approx(0.2)
    assert json.loads(tier["top_values"]) == {"basic": 3, "premium": 1}
    assert all(math.isnan(tier[stat]) for stat in ("min", "max", "mean", "p01", "p50", "p99"))


def test_summaries_percentiles_on_plateaus(spark):
    # 200 rows: 1 x10 | 2 x70 | 3 x40 | 4 x60 | 5 x20. Ranks 2, 50, 100, 150, 198 (of 0..199) sit
    # well inside a plateau, so p01..p99 are 1..5 whatever the interpolation.
    values = [1] * 10 + [2] * 70 + [3] * 40 + [4] * 60 + [5] * 20
    rows = [(i, D1, D1, v, 1.0, "basic", 1.0) for i, v in enumerate(values)]
    orders = feature_summaries(_frame(spark, rows), CONTRACT).set_index("feature").loc["orders_7d"]
    assert [orders[p] for p in ("p01", "p25", "p50", "p75", "p99")] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert orders["mean"] == pytest.approx(610 / 200)
    assert (orders["min"], orders["max"], orders["distinct"], orders["nulls"]) == (1.0, 5.0, 5, 0)


def test_summaries_top_values_keeps_five_most_frequent_ties_by_value(spark):
    tiers = ["a", "a", "a", "c", "b", "c", "b", "g", "f", "e", "d"]
    summaries = feature_summaries(_frame(spark, _with("plan_tier", tiers)), CONTRACT)
    tier = summaries.set_index("feature").loc["plan_tier"]
    assert list(json.loads(tier["top_values"]).items()) == [("a", 3), ("b", 2), ("c", 2), ("d", 1), ("e", 1)]
    assert tier["distinct"] == 7


def test_summaries_ignore_nan_in_statistics(spark):
    rows = _with("spend", [10.0, float("nan"), 30.0])
    spend = feature_summaries(_frame(spark, rows), CONTRACT).set_index("feature").loc["spend"]
    assert (spend["min"], spend["max"], spend["mean"], spend["nulls"]) == (10.0, 30.0, 20.0, 0)


def test_summaries_of_empty_frame(spark):
    summaries = feature_summaries(_frame(spark, []), CONTRACT)
    assert len(summaries) == 4
    assert (summaries["rows"] == 0).all() and (summaries["nulls"] == 0).all()
    assert (summaries["distinct"] == 0).all()
    assert summaries["null_rate"].isna().all() and summaries["mean"].isna().all()
    assert summaries.set_index("feature").loc["plan_tier", "top_values"] == "{}"
    assert check_contract(_frame(spark, []), CONTRACT, summaries) == []
    assert summary_metrics(summaries) == {f"t.{name}.distinct": 0.0 for name in CONTRACT.feature_names}


def test_summaries_of_frame_missing_a_feature(spark):
    frame = _frame(spark, CLEAN).drop("plan_tier")
    tier = feature_summaries(frame, CONTRACT).set_index("feature").loc["plan_tier"]
    assert tier["rows"] == 5 and pd.isna(tier["nulls"]) and tier["top_values"] is None


# --- check_contract: hard rules ----------------------------------------------------------------


def test_clean_frame_has_no_violations(spark):
    frame = _frame(spark, CLEAN)
    assert _check(frame) == []
    enforce(_check(frame))


def test_schema_missing_columns(spark):
    frame = _frame(spark, CLEAN).drop("ingested_at", "plan_tier")
    assert _check(frame) == [
        Violation("t", "ingested_at", "schema", "hard", "column present", "column missing"),
        Violation("t", "plan_tier", "schema", "hard", "column present", "column missing"),
    ]


def test_schema_null_keys_are_counted(spark):
    rows = [
        *CLEAN,
        (None, D3, D3, 1, 1.0, "basic", 1.0),
        (None, D3, D3, 1, 1.0, "basic", 1.0),
        (4, None, D3, 1, 1.0, "basic", 1.0),
    ]
    assert _check(_frame(spark, rows)) == [
        Violation("t", "customer_id", "schema", "hard", "no nulls (entity key)", "2 rows with a null"),
        Violation("t", "feature_ts", "schema", "hard", "no nulls (timestamp key)", "1 rows with a null"),
    ]


def test_schema_timestamp_must_be_timestamp_type(spark):
    rows = [(cid, str(ts), *rest) for cid, ts, *rest in CLEAN]
    frame = _frame(spark, rows, SCHEMA.replace("feature_ts timestamp", "feature_ts string"))
    assert _check(frame) == [Violation("t", "feature_ts", "schema", "hard", "timestamp type", "string")]


def test_schema_range_declared_on_non_numeric_column(spark):
    rows = [(*row[:4], str(row[4]), *row[5:]) for row in CLEAN]
    frame = _frame(spark, rows, SCHEMA.replace("spend double", "spend string"))
    assert _check(frame) == [Violation("t", "spend", "schema", "hard", "numeric type (range declared)", "string")]


def test_key_uniqueness(spark):
    rows = [
        (1, D1, D1, 1, 1.0, "basic", 1.0),
        (1, D1, D1, 2, 1.0, "basic", 1.0),
        (1, D1, D1, 3, 1.0, "basic", 1.0),
        (2, D1, D1, 1, 1.0, "basic", 1.0),
        (2, D1, D2, 1, 1.0, "basic", 1.0),
        (3, D1, D1, 1, 1.0, "basic", 1.0),
        (1, D2, D2, 1, 1.0, "basic", 1.0),
    ]
    assert _check(_frame(spark, rows)) == [
        Violation(
            "t",
            "customer_id,feature_ts",
            "key_uniqueness",
            "hard",
            "unique (customer_id, feature_ts)",
            "2 duplicated keys over 5 rows: (customer_id=1, feature_ts=2024-01-02 00:00:00) x3, "
            "(customer_id=2, feature_ts=2024-01-02 00:00:00) x2",
        )
    ]


def test_range_violations_count_and_examples(spark):
    rows = _with("orders_7d", [-1, 12, 5, 12, 11, None])
    assert _check(_frame(spark, rows)) == [
        Violation(
            "t",
            "orders_7d",
            "range",
            "hard",
            "values in [0, 10]",
            "4 values out of range (min found -1, max found 12): 12 x2, -1 x1, 11 x1",
        )
    ]


def test_range_open_bound_and_nan(spark):
    rows = _with("spend", [-0.5, float("nan"), 1e9, None])
    assert _check(_frame(spark, rows)) == [
        Violation(
            "t",
            "spend",
            "range",
            "hard",
            "values >= 0",
            "2 values out of range (min found -0.5, max found nan): -0.5 x1, nan x1",
        )
    ]


def test_range_examples_are_capped_at_five(spark):
    rows = _with("orders_7d", [17, 16, 15, 14, 13, 12, 11])
    (violation,) = _check(_frame(spark, rows))
    assert violation.offending == (
        "7 values out of range (min found 11, max found 17): 11 x1, 12 x1, 13 x1, 14 x1, 15 x1, ... (7 distinct)"
    )


def test_allowed_values(spark):
    rows = _with("plan_tier", ["gold", "basic", "free", "gold", None, "premium"])
    assert _check(_frame(spark, rows)) == [
        Violation(
            "t",
            "plan_tier",
            "allowed_values",
            "hard",
            "one of ['basic', 'premium']",
            "3 rows with unexpected values: 'gold' x2, 'free' x1",
        )
    ]


def test_all_hard_rules_at_once_in_rule_order(spark):
    rows = [
        (1, D1, D1, 11, 1.0, "gold", 1.0),
        (1, D1, D1, 1, 1.0, "basic", 1.0),
        (None, D1, D1, 1, 1.0, "basic", 1.0),
    ]
    rules = [(v.rule, v.feature) for v in _check(_frame(spark, rows))]
    assert rules == [
        ("schema", "customer_id"),
        ("key_uniqueness", "customer_id,feature_ts"),
        ("range", "orders_7d"),
        ("allowed_values", "plan_tier"),
    ]


# --- soft rule and enforce ---------------------------------------------------------------------


def test_null_rate_soft_rule_warns_and_does_not_raise(spark, caplog):
    # orders_7d (impute): 3 of 5 null -> warn; spend (drop): 2 of 5 -> fine;
    # avg_value (keep): all null -> no rule; plan_tier (impute): 0 null.
    rows = [
        (1, D1, D1, None, None, "basic", None),
        (2, D1, D1, None, None, "basic", None),
        (3, D1, D1, None, 1.0, "basic", None),
        (4, D1, D1, 1, 1.0, "basic", None),
        (5, D1, D1, 2, 1.0, "basic", None),
    ]
    violations = _check(_frame(spark, rows))
    assert violations == [
        Violation(
            "t",
            "orders_7d",
            "null_rate",
            "soft",
            "null_rate <= 0.5",
            "0.600 (3 of 5 rows null; null policy impute)",
        )
    ]
    with caplog.at_level(logging.WARNING, logger="lakehouse_ml.features.validation"):
        enforce(violations)
    assert [r.name for r in caplog.records] == ["lakehouse_ml.features.validation"]
    assert "t.orders_7d: null_rate expected null_rate <= 0.5, got 0.600" in caplog.records[0].getMessage()


def test_null_rate_of_exactly_half_is_fine(spark):
    rows = [(1, D1, D1, None, 1.0, "basic", 1.0), (2, D1, D1, 1, 1.0, "basic", 1.0)]
    assert _check(_frame(spark, rows)) == []


def test_enforce_raises_naming_table_feature_rule_and_values(caplog):
    out_of_range = "1 values out of range (min found 12, max found 12): 12 x1"
    unexpected = "1 rows with unexpected values: 'gold' x1"
    violations = [
        Violation("t", "orders_7d", "range", "hard", "values in [0, 10]", out_of_range),
        Violation("t", "plan_tier", "allowed_values", "hard", "one of ['basic']", unexpected),
        Violation("t", "spend", "null_rate", "soft", "null_rate <= 0.5", "0.900"),
    ]
    with caplog.at_level(logging.WARNING), pytest.raises(FeatureContractViolation) as raised:
        enforce(violations)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert message.splitlines() == [
        "2 hard feature contract violation(s):",
        f"  t.orders_7d: range expected values in [0, 10], got {out_of_range}",
        f"  t.plan_tier: allowed_values expected one of ['basic'], got {unexpected}",
    ]
    assert "t.spend: null_rate expected null_rate <= 0.5, got 0.900" in caplog.text


def test_enforce_end_to_end_from_frame(spark):
    frame = _frame(spark, _with("plan_tier", ["gold", "basic"]))
    with pytest.raises(FeatureContractViolation, match=r"t\.plan_tier: allowed_values .* 'gold' x1"):
        enforce(_check(frame))


# --- summary_metrics ---------------------------------------------------------------------------


def test_summary_metrics_names_and_skips_missing():
    summaries = pd.DataFrame(
        [
            {
                "table": "t",
                "feature": "x",
                "null_rate": 0.25,
                "distinct": 3,
                "min": 1.0,
                "max": 4.0,
                "mean": 2.5,
                "p50": 2.0,
                "p01": 1.0,
            },
            {
                "table": "t",
                "feature": "tier:v2",
                "null_rate": 0.0,
                "distinct": 2,
                "min": None,
                "max": float("nan"),
                "mean": None,
                "p50": None,
                "p01": None,
            },
        ]
    )
    assert summary_metrics(summaries) == {
        "t.x.null_rate": 0.25,
        "t.x.distinct": 3.0,
        "t.x.min": 1.0,
        "t.x.max": 4.0,
        "t.x.mean": 2.5,
        "t.x.p50": 2.0,
        "t.tier_v2.null_rate": 0.0,
        "t.tier_v2.distinct": 2.0,
    }


def test_summary_metrics_from_real_summaries(spark):
    metrics = summary_metrics(feature_summaries(_frame(spark, CLEAN), CONTRACT))
    assert metrics["t.orders_7d.mean"] == 2.5 and metrics["t.plan_tier.distinct"] == 2.0
    assert "t.plan_tier.mean" not in metrics
    assert all(isinstance(value, float) for value in metrics.values())


# --- apply_null_policy -------------------------------------------------------------------------


NULLS = [
    (1, D1, D1, None, 10.0, None, None),
    (2, D1, D1, 3, None, "premium", 2.0),
    (3, D1, D1, 4, 5.0, "basic", None),
]


def test_apply_null_policy_impute_drop_keep(spark):
    out = apply_null_policy(_frame(spark, NULLS), CONTRACT)
    assert out.columns == _frame(spark, NULLS).columns
    assert dict(out.dtypes)["orders_7d"] == "bigint"
    got = [
        tuple(r)
        for r in out.orderBy("customer_id")
        .select("customer_id", "orders_7d", "spend", "plan_tier", "avg_value")
        .collect()
    ]
    assert got == [(1, 0, 10.0, "unknown", None), (3, 4, 5.0, "basic", None)]


def test_apply_null_policy_on_chosen_features_only(spark):
    out = apply_null_policy(_frame(spark, NULLS), CONTRACT, ["plan_tier"])
    got = [tuple(r) for r in out.orderBy("customer_id").select("orders_7d", "spend", "plan_tier").collect()]
    assert got == [(None, 10.0, "unknown"), (3, None, "premium"), (4, 5.0, "basic")]
    assert apply_null_policy(_frame(spark, NULLS), CONTRACT, ["avg_value"]).count() == 3


def test_apply_null_policy_errors(spark):
    frame = _frame(spark, NULLS)
    with pytest.raises(ValueError, match=r"feature table 't'.*\['plan_tier'\]"):
        apply_null_policy(frame.drop("plan_tier"), CONTRACT)
    with pytest.raises(KeyError, match="no feature 'nope'"):
        apply_null_policy(frame, CONTRACT, ["nope"])
    raw = _raw()
    raw["features"]["orders_7d"]["null_policy"] = {"impute": "none"}
    with pytest.raises(ValueError, match="'orders_7d' is bigint but its null policy imputes 'none'"):
        apply_null_policy(frame, parse_contract("t", raw))


# --- the real contracts ------------------------------------------------------------------------


def _real(table: str):
    path = PROJECT_ROOT / "conf" / "base" / "feature_tables" / f"{table}.yml"
    return parse_contract(table, yaml.safe_load(path.read_text())["feature_tables"][table])


def _activity_type(name: str) -> str:
    if name == "days_since_last_order":
        return "int"
    return "double" if "spend" in name or "value" in name or "minutes" in name else "bigint"


def test_real_customer_activity_contract_passes_on_conforming_frame(spark):
    contract = _real("customer_activity")
    schema = "customer_id bigint, feature_ts timestamp, ingested_at timestamp, " + ", ".join(
        f"{name} {_activity_type(name)}" for name in contract.feature_names
    )

    def row(cid, ts, orders, spend, days):
        values = {
            name: (float(spend) if _activity_type(name) == "double" else orders) for name in contract.feature_names
        }
        values["avg_order_value_90d"] = spend / orders if orders else None
        values["days_since_last_order"] = days
        return (cid, ts, ts, *values.values())

    frame = spark.createDataFrame(
        [row(1, D1, 2, 40.0, 0), row(1, D2, 2, 40.0, 1), row(2, D1, 0, 0.0, None), row(3, D3, 5, 9.5, 89)],
        schema,
    )
    summaries = feature_summaries(frame, contract)
    assert list(summaries["feature"]) == contract.feature_names
    assert (summaries["contract_hash"] == contract.hash).all()
    assert check_contract(frame, contract, summaries) == []
    enforce(check_contract(frame, contract, summaries))


def test_real_customer_profile_contract_passes_on_conforming_frame(spark):
    contract = _real("customer_profile")
    frame = spark.createDataFrame(
        [
            (1, D1, D2, "basic", 9.99, "DE", "web", D1),
            (1, D3, D3, "premium", 19.99, "DE", "web", D1),
            (2, D2, D2, "standard", 0.0, None, "partner", None),
        ],
        "customer_id bigint, feature_ts timestamp, ingested_at timestamp, plan_tier string, "
        "monthly_price double, country string, channel string, signup_ts timestamp",
    )
    summaries = feature_summaries(frame, contract)
    by = summaries.set_index("feature")
    assert json.loads(by.loc["plan_tier", "top_values"]) == {"basic": 1, "premium": 1, "standard": 1}
    assert by.loc["monthly_price", "max"] == 19.99
    assert check_contract(frame, contract, summaries) == []
    enforce(check_contract(frame, contract, summaries))
