"""The features nodes over every declared table: no node names a table."""

from __future__ import annotations

import copy
from datetime import datetime

import pytest
import yaml

from lakehouse_ml.pipelines.features.nodes import record_refreshes, stage_refreshes, validate_refreshes
from tests.helpers import PROJECT_ROOT, FrameVersions
from tests.pipelines.features.test_kinds import GOLD, gold_row

REFRESHES = (
    "table string, refresh_id string, mode string, scope string, rows_upserted bigint, rows_deleted bigint, "
    "version_before bigint, version_after bigint, contract_hash string, source_version bigint, refreshed_at timestamp"
)
FEATURES = {"full_rebuild": False, "backfill": {"start": None}}


def declared() -> dict:
    tables = {}
    for path in sorted((PROJECT_ROOT / "conf/base/feature_tables").glob("*.yml")):
        tables.update(yaml.safe_load(path.read_text())["feature_tables"])
    return tables


def third_table(base: dict) -> dict:
    """A table over the same gold table with other windows, declared only here."""
    raw = copy.deepcopy(base)
    raw["features"] = {
        "sessions_3d": {**base["features"]["sessions_7d"], "window": "3 days"},
        "orders_60d": {**base["features"]["orders_30d"], "window": "60 days"},
    }
    return raw


@pytest.fixture
def sources(spark):
    gold = spark.createDataFrame(
        [gold_row("c1", 1, orders=2, net=30.0, sessions=1), gold_row("c2", 5, orders=1, net=5.0)], GOLD
    )
    customers = spark.createDataFrame(
        [], "event_id string, customer_id string, event_ts timestamp, delivered_at timestamp"
    )
    return {
        "gold.customer_daily_activity": FrameVersions([gold], GOLD),
        "silver.customers": FrameVersions([customers], "customer_id string"),
    }


def _stage(spark, tables, sources, **features):
    refreshes = spark.createDataFrame([], REFRESHES)
    staged, plans = stage_refreshes({}, refreshes, tables, {**FEATURES, **features}, **sources)
    return {name: update["rows"] for name, update in staged.items()}, plans, refreshes


def test_every_enabled_table_is_staged_and_a_disabled_one_is_left_alone(spark, sources):
    tables = declared()
    tables["customer_profile"]["enabled"] = False
    tables["session_behaviour"] = third_table(tables["customer_activity"])
    staged, plans, _ = _stage(spark, tables, sources)
    assert sorted(plans) == ["customer_activity", "session_behaviour"]
    assert {name: plan["mode"] for name, plan in plans.items()} == {
        "customer_activity": "full",
        "session_behaviour": "full",
    }
    columns = staged["session_behaviour"].columns
    assert {"sessions_3d", "orders_60d", "_deleted", "_refresh_id"} <= set(columns) and "orders_7d" not in columns
    # c1 ordered on Jan 1: the 3-day window holds its session on Jan 1..3 only (feature_ts Jan 2..4).
    rows = {(r["customer_id"], r["feature_ts"].day): r for r in staged["session_behaviour"].collect()}
    assert [rows[("c1", d)]["sessions_3d"] for d in (2, 4, 5)] == [1.0, 1.0, 0.0]


def test_a_source_the_lakehouse_does_not_write_is_refused_naming_the_setting(spark, sources):
    tables = declared()
    tables["customer_activity"]["source"] = "gold.nope"
    with pytest.raises(
        ValueError, match=r"feature_tables.customer_activity.source: 'gold.nope' is not a table the lakehouse writes"
    ):
        _stage(spark, tables, sources)
    tables = declared()
    tables["customer_activity"]["features"]["orders_7d"]["compute"] = {"sum": "order"}
    with pytest.raises(
        ValueError,
        match=r"feature_tables.customer_activity: source gold.customer_daily_activity has no column\(s\) \['order'\]",
    ):
        _stage(spark, tables, sources)
    with pytest.raises(ValueError, match=r"features.backfill.tables: \['nope'\] are not declared feature tables"):
        _stage(spark, declared(), sources, backfill={"start": "2026-01-01", "end": "2026-01-02", "tables": ["nope"]})


def test_a_violation_in_any_table_publishes_no_table(spark, sources):
    tables = declared()
    tables["customer_profile"]["enabled"] = False
    tables["session_behaviour"] = third_table(tables["customer_activity"])
    tables["session_behaviour"]["features"]["orders_60d"]["range"] = [0, 0]  # c1 ordered twice
    staged, plans, _ = _stage(spark, tables, sources)
    with pytest.raises(Exception, match=r"session_behaviour\.orders_60d: range expected values in \[0, 0\]"):
        validate_refreshes(staged, plans, tables)


def test_updates_carry_each_table_keys_and_stamp_and_the_log_one_row_per_refresh(spark, sources):
    tables = declared()
    tables["customer_profile"]["enabled"] = False
    tables["session_behaviour"] = third_table(tables["customer_activity"])
    staged, plans, refreshes = _stage(spark, tables, sources)
    updates, summaries, metrics = validate_refreshes(staged, plans, tables)
    assert sorted(updates) == ["customer_activity", "session_behaviour"]
    assert updates["session_behaviour"]["keys"] == ["customer_id", "feature_ts"]
    assert updates["session_behaviour"]["stamp"]["properties"]["lakehouse_ml.contract.table"] == "session_behaviour"
    assert "session_behaviour.sessions_3d.null_rate" in metrics
    published = {name: {"version": 0} for name in updates}
    log, summary_log = record_refreshes(staged, plans, summaries, published, refreshes, tables)
    rows = {r["table"]: r for r in log.collect()}
    assert sorted(rows) == ["customer_activity", "session_behaviour"]
    assert (rows["session_behaviour"]["mode"], rows["session_behaviour"]["version_after"]) == ("full", 0)
    assert rows["session_behaviour"]["rows_upserted"] == staged["session_behaviour"].count()
    assert {r["table"] for r in summary_log.select("table").distinct().collect()} == set(rows)
    assert isinstance(rows["customer_activity"]["refreshed_at"], datetime)
