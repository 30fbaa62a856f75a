"""Monitoring nodes on tiny hand-made frames: windows, served rows, labels, window-to-window drift,
quality, and what executing an action changes."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakehouse_ml.monitoring.drift import psi
from lakehouse_ml.pipelines.monitoring.nodes import (
    SIGNAL_COLUMNS,
    _versus_previous,
    _window_start,
    collect_served_rows,
    label_served_rows,
    plan_monitoring_actions,
    record_actions,
)
from tests.pipelines.registration.releases import GOVERNANCE

UTC = timezone.utc
MONITORING = {"window_days": 1, "lookback_windows": 30, "sources": ["batch", "online"]}
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
        _window_start(F.col("d"), 1).alias("daily"), _window_start(F.col("d"), 7).alias("weekly")
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

    served = collect_served_rows(predictions, log, {**MONITORING, "lookback_windows": 2}).toPandas()

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
        collect_served_rows(empty_predictions, empty_log, {**MONITORING, "sources": ["batch", "kafka"]})


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

    labeled = label_served_rows(served, orders, {"spine": {"horizon_days": 14}}).toPandas()

    labels = {
        (r.customer_id, r.served_ts.day): (None if pd.isna(r.label) else int(r.label)) for r in labeled.itertuples()
    }
    assert labels == {("a", 1): 0, ("b", 1): 1, ("c", 16): 1, ("c", 20): None, (None, 1): None}


def _signal(window: date, feature: str, metric: str, shares) -> dict:
    return {
        "window_start": window,
        "window_end": window + timedelta(days=1),
        "source": "batch",
        "model_name": "m",
        "model_version": "1",
        "slice": "all",
        "slice_value": "all",
        "feature": feature,
        "metric": metric,
        "value": 0.0,
        "warn": 0.1,
        "act": 0.25,
        "status": "ok",
        "n_rows": 10,
        "details": json.dumps({"shares": shares}),
    }


def test_each_window_is_compared_with_the_previous_one_on_the_baseline_bins():
    d1, d2, d3 = date(2026, 6, 1), date(2026, 6, 2), date(2026, 6, 3)
    signals = pd.DataFrame(
        [
            _signal(d2, "x", "psi", [0.5, 0.5, 0.0]),
            _signal(d1, "x", "psi", [0.5, 0.5, 0.0]),
            _signal(d3, "x", "psi", [0.1, 0.4, 0.5]),
            _signal(d1, "c", "js_distance", {"a": 1.0}),
            _signal(d2, "c", "js_distance", {"b": 1.0}),
        ],
        columns=SIGNAL_COLUMNS,
    )

    previous = _versus_previous(signals).set_index(["feature", "window_start"])

    assert previous.loc[("x", d2), "value"] == pytest.approx(0.0)  # the same shares
    # d3 vs d2: the PSI of the shares with the floor 1e-4 for the empty bin.
    assert previous.loc[("x", d3), "value"] == pytest.approx(psi([0.5, 0.5, 0.0], [0.1, 0.4, 0.5]))
    assert previous.loc[("x", d3), "status"] == "act" and previous.loc[("x", d3), "metric"] == "psi_vs_previous"
    # Disjoint categories: the largest JS distance, sqrt(ln 2).
    assert previous.loc[("c", d2), "value"] == pytest.approx(0.8325546)
    assert ("x", d1) not in previous.index  # the first window has nothing before it


def _decided(action: str, status: str = "to_execute", version: str = "2", target: str | None = "2") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "action_id": f"id-{action}",
                "rule": f"rule_{action}",
                "action": action,
                "model_name": "m",
                "model_version": version,
                "window_start": date(2026, 6, 2),
                "window_end": date(2026, 6, 3),
                "breached_windows": 2,
                "considered_windows": 3,
                "evidence": "[]",
                "description": "",
                "mode": "execute",
                "status": status,
                "blocked_reason": None,
                "target_version": target,
            }
        ]
    )


STATE = {
    "name": "m",
    "exists": True,
    "aliases": {"champion": "2", "previous_champion": "1", "challenger": "3"},
    "versions": {v: {"version": v, "tags": {"gates_report": f"r{v}"}} for v in ("1", "2", "3")},
}
REGISTRY = {
    "model_name": "m",
    "aliases": {"challenger": "challenger", "champion": "champion", "previous_champion": "previous_champion"},
}


def test_an_executed_rollback_moves_champion_back_and_is_audited_as_a_rollback():
    actions, event, retrain, outcome = plan_monitoring_actions(_decided("rollback"), STATE, REGISTRY, GOVERNANCE)

    assert [a for a in actions if a["action"] != "set_version_tag"] == [
        {"action": "set_alias", "alias": "champion", "version": "1"},
        {"action": "delete_alias", "alias": "previous_champion"},
    ]
    # Who: whoever runs the monitoring job; how: via monitoring (a rule, not a person's rollback run).
    tags = {a["key"]: a["value"] for a in actions if a["action"] == "set_version_tag" and a["version"] == "1"}
    assert (tags["rollback.actor"], tags["rollback.via"]) == (GOVERNANCE["actor"], "monitoring")
    assert event["action"] == "rollback" and event["via"] == "monitoring"
    assert event["reason"] == "monitoring rule rule_rollback: 2 of the last 3 windows up to 2026-06-03"
    assert retrain == {} and outcome == {"id-rollback": ("executed", None)}


def test_a_rollback_of_a_version_that_is_no_longer_champion_fails_with_the_reason():
    actions, event, _, outcome = plan_monitoring_actions(_decided("rollback", version="1"), STATE, REGISTRY, GOVERNANCE)

    assert actions == [] and event["moves"] == []
    assert outcome["id-rollback"] == ("failed", "version 1 is no longer 'champion' (it is 2)")


def test_block_promotion_tags_the_challenger_and_retrain_becomes_one_request():
    decided = pd.concat(
        [_decided("block_promotion", target="3"), _decided("retrain"), _decided("retrain").assign(action_id="id-2")]
    )

    actions, _, retrain, outcome = plan_monitoring_actions(decided, STATE, REGISTRY, GOVERNANCE)

    assert actions == [
        {
            "action": "set_version_tag",
            "version": "3",
            "key": "promotion_blocked",
            "value": "monitoring rule rule_block_promotion fired on version 2 (action id-block_promotion)",
        }
    ]
    assert retrain == {"reason": "monitoring rule rule_retrain on version 2", "action_ids": ["id-retrain", "id-2"]}
    assert set(outcome.values()) == {("executed", None)}


def test_alerts_and_blocked_actions_change_nothing_and_keep_their_status():
    decided = pd.concat(
        [_decided("retrain", status="alerted"), _decided("rollback", status="blocked").assign(blocked_reason="x")]
    )

    actions, event, retrain, outcome = plan_monitoring_actions(decided, STATE, REGISTRY, GOVERNANCE)
    recorded = record_actions(decided, outcome, STATE)

    assert (actions, event["moves"], retrain, outcome) == ([], [], {}, {})
    assert list(recorded["status"]) == ["alerted", "blocked"] and list(recorded["blocked_reason"].fillna("-")) == [
        "-",
        "x",
    ]
