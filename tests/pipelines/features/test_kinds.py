"""Feature computations per kind on tiny hand-made gold/silver frames, expected values worked out by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
import yaml
from pyspark.sql import functions as F

from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.pipelines.features.kinds import compute_change_features, compute_window_features, daily_windows
from lakehouse_ml.pipelines.features.nodes import plan_refresh
from tests.helpers import PROJECT_ROOT, FrameVersions

GOLD = (
    "customer_id string, activity_date date, orders bigint, items bigint, sessions bigint, "
    "session_seconds bigint, pages bigint, tickets bigint, high_severity_tickets bigint, "
    "gross_amount_eur double, net_amount_eur double, last_delivered_at timestamp, _updated_at timestamp"
)


def contract(table):
    raw = yaml.safe_load((PROJECT_ROOT / f"conf/base/feature_tables/{table}.yml").read_text())["feature_tables"][table]
    return parse_contract(table, raw)


def gold_row(customer, day, orders=0, net=0.0, sessions=0, seconds=0, tickets=0, high=0):
    """One gold row for Jan <day>, delivered the next day at 02:00."""
    delivered = datetime(2026, 1, 1, 2, 0) + timedelta(days=day)
    day = date(2026, 1, day)
    return (
        customer,
        day,
        orders,
        orders,
        sessions,
        seconds,
        sessions,
        tickets,
        high,
        net,
        net,
        delivered,
        datetime(2026, 3, 1),
    )


def test_activity_windows_expire_exactly_and_feature_ts_is_the_end_of_the_day(spark):
    gold = spark.createDataFrame(
        [
            gold_row("c1", 1, orders=2, net=30.0, sessions=1, seconds=120),
            gold_row("c1", 5, orders=1, net=10.0, tickets=1, high=1),
        ],
        GOLD,
    )
    rows = compute_window_features(gold, date(2026, 1, 1), date(2026, 1, 10), contract("customer_activity"))
    by_day = {r["feature_ts"].date(): r.asDict() for r in rows.collect()}
    # A row for every day from the first activity on (the 90-day windows hold activity).
    assert sorted(by_day) == [date(2026, 1, d) for d in range(2, 12)]
    jan1, jan7, jan8 = by_day[date(2026, 1, 2)], by_day[date(2026, 1, 8)], by_day[date(2026, 1, 9)]
    assert jan1["feature_ts"] == datetime(2026, 1, 2, 0, 0)  # end of Jan 1
    assert (jan1["orders_7d"], jan1["net_spend_30d"], jan1["days_since_last_order"]) == (2.0, 30.0, 0)
    assert jan1["session_minutes_30d"] == 2.0 and jan1["avg_order_value_90d"] == 15.0
    # Jan 7: Jan 1..7 in the 7-day window → 3 orders; Jan 8: Jan 1 expired → 1 order.
    assert (jan7["orders_7d"], jan8["orders_7d"], jan8["orders_30d"]) == (3.0, 1.0, 3.0)
    assert (jan7["days_since_last_order"], jan8["days_since_last_order"]) == (2, 3)
    assert jan8["avg_order_value_90d"] == pytest.approx(40.0 / 3)
    assert (jan8["tickets_30d"], jan8["high_severity_tickets_90d"], jan8["sessions_7d"]) == (1.0, 1.0, 0.0)
    # ingested_at: the latest delivery among the days used (Jan 5's delivery on Jan 6 02:00).
    assert jan8["ingested_at"] == datetime(2026, 1, 6, 2, 0)
    assert jan1["ingested_at"] == datetime(2026, 1, 2, 2, 0)


def test_activity_rows_stop_when_the_longest_window_is_empty(spark):
    gold = spark.createDataFrame([gold_row("c1", 1, orders=1, net=5.0)], GOLD)
    start, end = date(2026, 1, 1), date(2026, 4, 30)
    rows = compute_window_features(gold, start, end, contract("customer_activity")).collect()
    days = sorted(r["feature_ts"].date() for r in rows)
    # Jan 1 stays in the 90-day window through Mar 31 (day D = Jan 1 + 89): feature_ts Apr 1.
    assert (days[0], days[-1], len(days)) == (date(2026, 1, 2), date(2026, 4, 1), 90)
    last = max(rows, key=lambda r: r["feature_ts"])
    assert (last["orders_90d"], last["orders_30d"], last["days_since_last_order"]) == (1.0, 0.0, 89)
    assert last["avg_order_value_90d"] == 5.0


def test_activity_scope_gives_the_same_rows_as_a_wider_computation(spark):
    gold = spark.createDataFrame(
        [gold_row("c1", d, orders=d % 3, net=float(d), sessions=1) for d in range(1, 29)]
        + [gold_row("c2", d, tickets=1) for d in (3, 17)],
        GOLD,
    )
    c = contract("customer_activity")
    wide = {
        (r["customer_id"], r["feature_ts"]): r
        for r in compute_window_features(gold, date(2026, 1, 1), date(2026, 1, 28), c).collect()
    }
    narrow = compute_window_features(gold, date(2026, 1, 20), date(2026, 1, 25), c).collect()
    assert len(narrow) == 12  # 2 customers x 6 days
    for row in narrow:
        assert row == wide[(row["customer_id"], row["feature_ts"])]


def test_profile_rows_are_valid_from_their_event_time_latest_delivery_wins(spark):
    customers = spark.createDataFrame(
        [
            (
                "e1",
                "c1",
                "2026-01-01 10:00:00",
                "2026-01-02 02:00:00",
                "2025-06-01 00:00:00",
                "DE",
                "organic",
                "basic",
                9.99,
            ),
            (
                "e2",
                "c1",
                "2026-02-01 10:00:00",
                "2026-02-02 02:00:00",
                "2025-06-01 00:00:00",
                "DE",
                "organic",
                "premium",
                34.99,
            ),
            # a corrected re-send of the same change, delivered later, wins
            (
                "e3",
                "c1",
                "2026-02-01 10:00:00",
                "2026-02-05 02:00:00",
                "2025-06-01 00:00:00",
                "DE",
                "organic",
                "standard",
                19.99,
            ),
        ],
        "event_id string, customer_id string, event_ts string, delivered_at string, signup_ts string, country string, channel string, plan_tier string, monthly_price double",
    )
    for column in ("event_ts", "delivered_at", "signup_ts"):
        customers = customers.withColumn(column, F.to_timestamp(column))
    rows = sorted(
        compute_change_features(customers, contract("customer_profile")).collect(), key=lambda r: r["feature_ts"]
    )
    assert [(r["feature_ts"], r["plan_tier"], r["ingested_at"]) for r in rows] == [
        (datetime(2026, 1, 1, 10), "basic", datetime(2026, 1, 2, 2)),
        (datetime(2026, 2, 1, 10), "standard", datetime(2026, 2, 5, 2)),
    ]


def test_plan_refresh_modes(spark):
    c = contract("customer_activity")
    source = FrameVersions([spark.range(1)] * 3, "id long")  # version 2
    empty_log = spark.createDataFrame(
        [], "table string, source_version bigint, version_after bigint, refreshed_at timestamp"
    )
    log = spark.createDataFrame([("customer_activity", 2, 4, datetime(2026, 3, 1))], empty_log.schema)
    features = {"full_rebuild": False, "backfill": {"start": None}}
    assert plan_refresh(source, empty_log, c, features)["mode"] == "full"
    unchanged = plan_refresh(source, log, c, features)
    assert (unchanged["mode"], unchanged["version_before"]) == ("none", 4)
    # The same source under a changed contract (a feature added, a window changed) is recomputed.
    hashed = spark.createDataFrame(
        [("customer_activity", 2, 4, datetime(2026, 3, 1), c.hash)],
        f"{empty_log.schema.simpleString()[7:-1]}, contract_hash string",
    )
    assert plan_refresh(source, hashed, c, features)["mode"] == "none"
    changed = parse_contract("customer_activity", {**c.raw, "features": {**c.raw["features"], "orders_7d": None}})
    assert plan_refresh(source, hashed, changed, features)["mode"] == "full"
    newer = FrameVersions([spark.range(1)] * 4, "id long")
    assert (plan_refresh(newer, log, c, features)["mode"], plan_refresh(newer, log, c, features)["since_version"]) == (
        "incremental",
        2,
    )
    assert plan_refresh(source, log, c, {**features, "full_rebuild": True})["mode"] == "full"
    # A log written before source versions were recorded: everything is recomputed once.
    old_log = spark.createDataFrame(
        [("customer_activity", 4, datetime(2026, 3, 1))], "table string, version_after bigint, refreshed_at timestamp"
    )
    assert plan_refresh(newer, old_log, c, features)["mode"] == "full"
    backfill = plan_refresh(newer, log, c, {"backfill": {"start": "2026-02-01", "end": "2026-02-10"}})
    assert (backfill["mode"], backfill["start"], backfill["end"]) == ("backfill", date(2026, 2, 1), date(2026, 2, 10))
    assert backfill["source_version"] == 2  # the rest of the table still reflects version 2
    with pytest.raises(ValueError, match="end 2026-01-01 is before start 2026-02-01"):
        plan_refresh(source, log, c, {"backfill": {"start": "2026-02-01", "end": "2026-01-01"}})


def test_an_incremental_refresh_when_data_shrinks_deletes_rows_past_the_new_end(spark):
    """The last day of gold empties (its order moved earlier): rows past the new end must go, as a
    full recomputation has none there."""
    c = contract("customer_activity")
    before = spark.createDataFrame([gold_row("c1", 1, orders=1, net=5.0), gold_row("c1", 10, orders=1, net=5.0)], GOLD)
    after = spark.createDataFrame([gold_row("c1", 1, orders=1, net=5.0), gold_row("c1", 5, orders=1, net=5.0)], GOLD)
    gold = FrameVersions([before, after], GOLD)
    full_before = compute_window_features(before, date(2026, 1, 1), date(2026, 1, 10), c)
    existing = full_before.select("customer_id", "feature_ts")
    log = spark.createDataFrame(
        [("customer_activity", 0, 3, datetime(2026, 3, 1))],
        "table string, source_version bigint, version_after bigint, refreshed_at timestamp",
    )
    features = {"full_rebuild": False, "backfill": {"start": None}}
    staged, plan = daily_windows(gold, existing, c, plan_refresh(gold, log, c, features))
    assert (plan["mode"], plan["start"], plan["end"]) == ("incremental", date(2026, 1, 5), date(2026, 1, 10))
    deleted = sorted(r["feature_ts"].day - 1 for r in staged.filter("_deleted").collect())
    kept = sorted(r["feature_ts"].day - 1 for r in staged.filter("not _deleted").collect())
    assert kept == [5] and deleted == [6, 7, 8, 9, 10]  # day D's row has feature_ts D+1
