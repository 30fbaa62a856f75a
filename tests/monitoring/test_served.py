"""What was served, on tiny hand-made frames: windows aligned on the epoch, batch and online rows
of the latest windows, and churn labels once the horizon has passed."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakehouse_ml.monitoring.served import churn_labels, served_rows, window_start

UTC = timezone.utc
PREDICTIONS = (
    "customer_id string, scoring_date date, scoring_ts timestamp, probability double, threshold double, "
    "model_name string, model_version string, features string"
)
LOG = (
    "request_id string, served boolean, logged_at timestamp, customer_id string, model_name string, "
    "model_version string, probability double, threshold double, features string, flags array<string>"
)


def _prediction(customer, day, probability=0.5, version="1"):
    return (
        customer,
        day,
        datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),
        probability,
        0.3,
        "m",
        version,
        "{}",
    )


def test_windows_are_aligned_on_the_epoch(spark):
    # 2026-06-28 is day 20,632 after 1970-01-01; 20,632 = 7 * 2,947 + 3, so its weekly window starts
    # 3 days earlier, on 2026-06-25 (day 20,629), and 2026-06-25 .. 07-01 share it.
    days = spark.createDataFrame([(date(2026, 6, 28),), (date(2026, 6, 25),), (date(2026, 7, 2),)], "d date")
    starts = days.select(
        window_start(F.col("d"), 1).alias("daily"), window_start(F.col("d"), 7).alias("weekly")
    ).collect()
    assert [(r["daily"], r["weekly"]) for r in starts] == [
        (date(2026, 6, 28), date(2026, 6, 25)),
        (date(2026, 6, 25), date(2026, 6, 25)),
        (date(2026, 7, 2), date(2026, 7, 2)),
    ]


def test_served_rows_unite_batch_and_served_online_rows_of_the_latest_windows(spark):
    predictions = spark.createDataFrame(
        [_prediction("a", date(2026, 6, 1)), _prediction("b", date(2026, 6, 20)), _prediction("c", date(2026, 6, 21))],
        PREDICTIONS,
    )
    at = datetime(2026, 6, 21, 13, 5, tzinfo=UTC)
    log = spark.createDataFrame(
        [
            ("r1", True, at, "d", "m", "1", 0.7, 0.3, "{}", ["stale"]),
            ("r2", False, at, "d", "m", "2", 0.9, 0.3, "{}", []),  # a shadow score: never served
        ],
        LOG,
    )

    served = served_rows(predictions, log, ["batch", "online"], 1, 2).toPandas()

    # The latest window is 2026-06-21; two windows back to 06-20: the 06-01 prediction is left out.
    assert sorted(zip(served["source"], served["customer_id"], served["window_start"].astype(str))) == [
        ("batch", "b", "2026-06-20"),
        ("batch", "c", "2026-06-21"),
        ("online", "d", "2026-06-21"),
    ]
    assert set(served["window_end"] - served["window_start"]) == {timedelta(days=1)}
    assert list(served.loc[served["source"] == "online", "flags"].iloc[0]) == ["stale"]


def test_an_unknown_source_is_named(spark):
    empty_predictions, empty_log = spark.createDataFrame([], PREDICTIONS), spark.createDataFrame([], LOG)
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['kafka'\]"):
        served_rows(empty_predictions, empty_log, ["batch", "kafka"], 1, 30)


def test_labels_follow_the_churn_definition_once_the_horizon_has_passed(spark):
    # Horizon 14 days; orders run until 2026-06-30, so a row served at T is labelled when T + 14 days
    # <= 2026-06-30 00:00, i.e. T <= 06-16 00:00.
    served = spark.createDataFrame(
        [
            ("a", datetime(2026, 6, 1, tzinfo=UTC)),  # orders on 06-10 (inside [06-01, 06-15)): 0
            ("b", datetime(2026, 6, 1, tzinfo=UTC)),  # next order 06-15 00:00 (the horizon's end, excluded): 1
            ("c", datetime(2026, 6, 16, tzinfo=UTC)),  # horizon ends exactly 06-30: 1 (no order after)
            ("c", datetime(2026, 6, 20, tzinfo=UTC)),  # horizon not over: unknown
            (None, datetime(2026, 6, 1, tzinfo=UTC)),  # a payload without a customer: no label
        ],
        "customer_id string, served_ts timestamp",
    )
    orders = spark.createDataFrame(
        [
            ("a", datetime(2026, 6, 10, tzinfo=UTC)),
            ("b", datetime(2026, 6, 15, tzinfo=UTC)),
            ("c", datetime(2026, 6, 10, tzinfo=UTC)),
            ("z", datetime(2026, 6, 30, 8, tzinfo=UTC)),
        ],
        "customer_id string, event_ts timestamp",
    )

    labeled = churn_labels(served, orders, 14).toPandas()

    labels = {
        (r.customer_id, r.served_ts.day): (None if pd.isna(r.label) else int(r.label)) for r in labeled.itertuples()
    }
    assert labels == {("a", 1): 0, ("b", 1): 1, ("c", 16): 1, ("c", 20): None, (None, 1): None}
