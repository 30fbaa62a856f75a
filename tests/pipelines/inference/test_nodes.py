"""Inference nodes on hand-made rows: the scoring kernel, contract rejections, the default
scoring date and the delete markers that keep rejections idempotent."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.pipelines.inference._scoring import score_batch
from lakehouse_ml.pipelines.inference.nodes import build_scoring_spine, rejection_reasons, select_rejections
from tests.helpers import project_config

AT = datetime(2026, 3, 1, tzinfo=timezone.utc)


class _Model:
    """Records what it is asked to score; P(positive) = orders / 10."""

    def __init__(self) -> None:
        self.seen = []

    def predict_proba(self, rows):
        self.seen.append(rows.copy())
        p = rows["orders"].to_numpy(dtype=float) / 10
        return np.column_stack([1 - p, p])


def test_the_kernel_scores_only_accepted_rows_and_passes_every_column_through():
    batch = pa.RecordBatch.from_pydict(
        {
            "customer_id": ["a", "b", "c"],
            "orders": [1.0, 2.0, None],
            "tier": ["x", None, "y"],
            "reasons": [[], ["too old"], []],
            "_rejected": [False, True, False],
        }
    )
    model = _Model()
    out = score_batch(batch, model, ["orders", "tier"], "_rejected", "probability")
    assert out.schema.names == [*batch.schema.names, "probability"]
    assert out.column("probability").to_pylist()[:2] == [0.1, None]
    assert np.isnan(out.column("probability").to_pylist()[2])  # the model's own answer for a null input
    assert out.column("reasons").to_pylist() == [[], ["too old"], []]
    assert list(model.seen[0].columns) == ["orders", "tier"] and list(model.seen[0]["tier"]) == ["x", "y"]


def test_a_batch_of_rejected_rows_never_reaches_the_model():
    batch = pa.RecordBatch.from_pydict({"orders": [1.0], "_rejected": [True]})
    model = _Model()
    assert score_batch(batch, model, ["orders"], "_rejected", "p").column("p").to_pylist() == [None]
    assert model.seen == []


@pytest.fixture(scope="module")
def contracts():
    params = project_config()["parameters"]
    return {
        name: parse_contract(name, params["feature_tables"][name]) for name in ("customer_activity", "customer_profile")
    }


INPUTS = [
    "customer_activity__orders_30d",
    "customer_activity__days_since_last_order",
    "customer_profile__plan_tier",
    "customer_profile__monthly_price",
]
SCHEMA = (
    "customer_id string, customer_activity__feature_ts timestamp, customer_activity__orders_30d double, "
    "customer_activity__days_since_last_order int, customer_activity__orders_7d double, "
    "customer_profile__feature_ts timestamp, customer_profile__plan_tier string, customer_profile__monthly_price double"
)


def _reasons(spark, contracts, rows, rules=("range", "allowed_values", "null_policy", "freshness")):
    frame = spark.createDataFrame(rows, SCHEMA)
    result = frame.select(
        "customer_id", rejection_reasons(frame, contracts, INPUTS, AT, list(rules)).alias("r")
    ).collect()
    return {row["customer_id"]: list(row["r"]) for row in result}


def _row(customer, activity_age=timedelta(days=1), orders=3.0, days_since=4, orders_7d=1.0, tier="basic", price=9.99):
    return (
        customer,
        AT - activity_age if activity_age is not None else None,
        orders,
        days_since,
        orders_7d,
        AT - timedelta(days=100),
        tier,
        price,
    )


def test_each_contract_rule_names_table_feature_rule_and_value(spark, contracts):
    reasons = _reasons(
        spark,
        contracts,
        [
            _row("ok"),
            _row("negative", orders=-2.0),
            _row("nan", orders=float("nan")),
            _row("above", days_since=90),
            _row("unknown_tier", tier="gold"),
            _row("no_price", price=None),
            _row("null_imputed", orders=None, tier=None),  # impute policies: nulls are fine
            _row("unused", orders_7d=-5.0),  # not a model input: not judged
            _row("no_activity_row", activity_age=None, orders=None, days_since=None),
            _row("stale", activity_age=timedelta(days=3)),  # found with a longer lookback than the freshness
        ],
    )
    assert reasons["ok"] == [] and reasons["null_imputed"] == [] and reasons["unused"] == []
    assert reasons["negative"] == ["customer_activity.orders_30d: range expected values >= 0, got -2.0"]
    assert reasons["nan"] == ["customer_activity.orders_30d: range expected values >= 0, got NaN"]
    assert reasons["above"] == ["customer_activity.days_since_last_order: range expected values in [0, 89], got 90"]
    assert reasons["unknown_tier"] == [
        "customer_profile.plan_tier: allowed_values expected one of ['basic', 'standard', 'premium'], got 'gold'"
    ]
    assert reasons["no_price"] == [
        "customer_profile.monthly_price: null_policy expected a value (policy drop), got null"
    ]
    assert reasons["no_activity_row"] == [
        "customer_activity.feature_ts: freshness expected a feature row at most 2d old at 2026-03-01T00:00:00+00:00, got none"
    ]
    assert reasons["stale"] == [
        "customer_activity.orders_30d: freshness expected at most 2d old at 2026-03-01T00:00:00+00:00, got 3.0 days"
    ]


def test_only_the_configured_rules_reject(spark, contracts):
    reasons = _reasons(
        spark, contracts, [_row("no_activity_row", activity_age=None), _row("negative", orders=-1.0)], rules=["range"]
    )
    assert reasons == {
        "no_activity_row": [],
        "negative": ["customer_activity.orders_30d: range expected values >= 0, got -1.0"],
    }
    with pytest.raises(ValueError, match=r"unknown rules \['ranges'\]"):
        _reasons(spark, contracts, [_row("x")], rules=["ranges"])


def test_the_default_scoring_date_is_the_last_day_ended_before_the_latest_delivery(spark):
    orders = spark.createDataFrame(
        [
            ("a", datetime(2026, 2, 27, 23, 0, tzinfo=timezone.utc), datetime(2026, 2, 28, 2, 0, tzinfo=timezone.utc)),
            ("b", datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc), datetime(2026, 1, 2, 2, 0, tzinfo=timezone.utc)),
            ("c", datetime(2026, 2, 28, 1, 0, tzinfo=timezone.utc), datetime(2026, 2, 28, 2, 0, tzinfo=timezone.utc)),
        ],
        "customer_id string, event_ts timestamp, delivered_at timestamp",
    )
    spine, scoring = build_scoring_spine(orders, {"scoring_date": None}, {"spine": {"active_lookback_days": 30}})
    # The delivery of Feb 28, 02:00 closes Feb 27; the order at 01:00 on Feb 28 is after the scoring time.
    assert scoring["scoring_date"] == "2026-02-27" and scoring["scoring_ts"] == "2026-02-28T00:00:00+00:00"
    assert sorted(row["customer_id"] for row in spine.collect()) == ["a"]
    _, configured = build_scoring_spine(orders, {"scoring_date": "2026-01-15"}, {"spine": {"active_lookback_days": 30}})
    assert configured["scoring_date"] == "2026-01-15" and configured["source"] == "configured"
    with pytest.raises(ValueError, match="inference.scoring_date must be a date"):
        build_scoring_spine(orders, {"scoring_date": "yesterday"}, {"spine": {"active_lookback_days": 30}})


def test_earlier_rejections_of_the_same_date_and_version_get_delete_markers(spark):
    rows = spark.createDataFrame(
        [("a", date(2026, 3, 1), "2", True, ["x.y: range expected values >= 0, got -1"], 1.0)],
        "customer_id string, scoring_date date, model_version string, _rejected boolean, rejection_reasons array<string>, f double",
    ).selectExpr(
        "*",
        "timestamp'2026-03-02 00:00:00' as scoring_ts",
        "'m' as model_name",
        "'champion' as model_alias",
        "'r' as model_run_id",
        "map('t', 1L) as feature_table_versions",
        "1L as orders_version",
        "current_timestamp() as scored_at",
        "cast(null as double) as probability",
        "cast(null as int) as decision",
        "0.5 as threshold",
    )
    recorded = spark.createDataFrame(
        [
            ("a", date(2026, 3, 1), "2"),
            ("b", date(2026, 3, 1), "2"),
            ("c", date(2026, 3, 1), "1"),
            ("d", date(2026, 2, 1), "2"),
        ],
        "customer_id string, scoring_date date, model_version string",
    )
    out = select_rejections(rows, recorded, {"scoring_date": "2026-03-01", "model_version": "2"})
    result = {row["customer_id"]: row for row in out.collect()}
    assert set(result) == {"a", "b"}  # c and d belong to another version or date
    assert result["a"]["_deleted"] is False and result["a"]["reason"] == "x.y: range expected values >= 0, got -1"
    assert result["a"]["features"] == '{"f":1.0}'
    assert result["b"]["_deleted"] is True and result["b"]["reason"] is None
