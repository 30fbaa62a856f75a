"""Label spine and leakage guard on hand-made frames."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.sql import functions as F

from lakehouse_ml.features.lookup import FeatureLookup, build_training_set
from lakehouse_ml.modeling.guards import TrainingDataError
from lakehouse_ml.pipelines.training_set.nodes import (
    build_label_spine,
    check_point_in_time,
    cutoff_dates,
    guard_training_set,
)
from tests.helpers import merged_parameters

SPINE = {"first_cutoff": None, "warmup_days": 10, "every_days": 7, "horizon_days": 30, "active_lookback_days": 60}


def orders(spark, rows):
    frame = spark.createDataFrame(rows, "customer_id string, event_ts string")
    return frame.withColumn("event_ts", F.to_timestamp("event_ts"))


def test_cutoffs_start_after_warm_up_and_end_where_the_horizon_is_observed():
    assert cutoff_dates(date(2026, 1, 1), date(2026, 3, 1), SPINE) == [
        date(2026, 1, 11),
        date(2026, 1, 18),
        date(2026, 1, 25),
    ]  # the last cutoff is at most Mar 1 - 30 days = Jan 30; Feb 1 + 30 days is after Mar 1
    assert cutoff_dates(date(2026, 1, 1), date(2026, 1, 20), SPINE) == []
    assert cutoff_dates(date(2026, 1, 1), date(2026, 3, 1), {**SPINE, "first_cutoff": "2026-01-30"}) == [
        date(2026, 1, 30)
    ]


def test_label_is_no_order_within_the_horizon_for_customers_active_at_the_cutoff(spark):
    frame = orders(
        spark,
        [
            ("c1", "2026-01-01 10:00:00"),  # active at Jan 11; orders again Jan 20 → not churned
            ("c1", "2026-01-20 10:00:00"),
            ("c2", "2026-01-05 10:00:00"),  # active at Jan 11; next order Feb 10 = Jan 11 + 30 days → churned
            ("c2", "2026-02-10 00:00:00"),
            ("c3", "2026-01-11 00:00:00"),  # first order exactly at the cutoff: not active yet at Jan 11
            ("c4", "2026-03-31 12:00:00"),  # the data's last day
        ],
    )
    spine = build_label_spine(frame, {**SPINE, "every_days": 100})
    rows = sorted((r["customer_id"], r["cutoff_ts"], r["churned"]) for r in spine.collect())
    assert rows == [
        ("c1", datetime(2026, 1, 11), 0),
        ("c2", datetime(2026, 1, 11), 1),
    ]


def test_leakage_guard_counts_and_refuses_rows_from_after_the_cutoff(spark):
    tables = {"customer_activity": merged_parameters()["feature_tables"]["customer_activity"]}
    training = {"lookup_defaults": {"filter_by_ingested_at": True}}
    good = spark.createDataFrame(
        [
            ("c1", datetime(2026, 2, 1), 1, datetime(2026, 2, 1), datetime(2026, 1, 31, 2)),
            ("c2", datetime(2026, 2, 1), 0, None, None),
        ],
        "customer_id string, cutoff_ts timestamp, churned int, customer_activity__feature_ts timestamp, customer_activity__ingested_at timestamp",
    )
    proof = check_point_in_time(good, tables, training)
    assert proof["leakage.customer_activity.feature_after_cutoff"]["value"] == 0
    assert proof["leakage.customer_activity.known_after_cutoff"]["value"] == 0
    assert proof["leakage.customer_activity.rows_matched"]["value"] == 1
    assert proof["training_set.rows"]["value"] == 2 and proof["training_set.churn_rate"]["value"] == 0.5
    leaky = good.withColumn("customer_activity__ingested_at", F.lit(datetime(2026, 2, 1, 2)).cast("timestamp"))
    with pytest.raises(AssertionError, match="known_after_cutoff': 2"):
        check_point_in_time(leaky, tables, training)


def _looked_up(spark, labels, feature_rows):
    """A spine of one customer per label at Feb 1 and a customer_activity lookup of ``feature_rows``."""
    spine = spark.createDataFrame(
        [(f"c{i}", datetime(2026, 2, 1), label) for i, label in enumerate(labels)],
        "customer_id string, cutoff_ts timestamp, churned int",
    )
    features = spark.createDataFrame(
        feature_rows, "customer_id string, orders_30d int, feature_ts timestamp, ingested_at timestamp"
    )
    lookup = FeatureLookup(
        source=features,
        feature_names=["orders_30d", "feature_ts", "ingested_at"],
        lookup_key=["customer_id"],
        timestamp_key="feature_ts",
        ingested_at_key="ingested_at",
        filter_by_ingested_at=True,
        prefix="customer_activity__",
    )
    return build_training_set(spine, [lookup], "customer_id", "cutoff_ts"), [lookup]


def test_training_set_guard_passes_matched_lookups_and_both_classes(spark):
    known = [(f"c{i}", i, datetime(2026, 1, 31), datetime(2026, 1, 31, 2)) for i in range(4)]
    guard_training_set(*_looked_up(spark, [0, 1, 0, 0], known), {"min_matched_share": 0.75})


def test_training_set_guard_names_a_single_class_and_a_lookup_known_only_after_the_cutoffs(spark):
    late = [(f"c{i}", i, datetime(2026, 1, 31), datetime(2026, 6, 1)) for i in range(3)] + [
        ("c3", 3, datetime(2026, 1, 31), datetime(2026, 1, 31, 2)),
    ]
    with pytest.raises(TrainingDataError) as raised:
        guard_training_set(*_looked_up(spark, [0, 0, 0, 0], late), {"min_matched_share": 0.5})
    message = str(raised.value)
    assert message.startswith("training set: 2 problems:")
    assert "lookup 'customer_activity' matched a feature row for 1 of 4 spine rows (25.0%)" in message
    assert (
        "Likely cause (3 of the 3 unmatched rows): all feature rows stamped by the cutoff became known (ingested_at, the availability time)"
        in message
    )
    assert "training_set.lookups.customer_activity.filter_by_ingested_at: false" in message
    assert "the label churned has a single class in 4 spine rows (0: 4, 1: 0)" in message
    assert "training_set.spine.horizon_days" in message
