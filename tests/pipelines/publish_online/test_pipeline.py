"""The publish_online pipeline on a small simulated lakehouse built by the real pipelines: the store
holds each customer's latest row as of the publish time, a re-run writes nothing, a changed customer
is the only key upserted, and — no training/serving skew — the online vectors at the batch scoring
time equal the offline point-in-time vectors (and problems equal batch inference's rejections)."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.features.on_demand import parse_on_demand
from lakehouse_ml.features.tables import parsed_contracts, resolve_lookups
from lakehouse_ml.modeling.models import feature_columns
from lakehouse_ml.online import OnlineFeatureLookup, SQLiteOnlineStore
from lakehouse_ml.pipelines.features.pipeline import create_pipeline as features_pipeline
from lakehouse_ml.pipelines.inference.nodes import (
    RULES,
    build_scoring_spine,
    look_up_scoring_features,
    rejection_reasons,
)
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from lakehouse_ml.pipelines.publish_online.pipeline import create_pipeline as publish_pipeline
from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline as simulate_pipeline
from tests.helpers import project_config, run_pipeline
from tests.pipelines.inference.test_pipeline import PARAMS

LAKE = Path("data/lakehouse/dev")
STORE = Path("data/07_model_output/dev/online_store.db")
TABLES = ("customer_activity", "customer_profile")


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory, spark):
    """A small lakehouse built by the real pipelines (the inference tests' business)."""
    root = tmp_path_factory.mktemp("publish_online")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_pipeline(simulate_pipeline() + ingest_pipeline() + features_pipeline(), runtime_params=PARAMS)
        yield root
    finally:
        os.chdir(cwd)


@pytest.fixture
def fresh_store(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse)
    for path in STORE.parent.glob(STORE.name + "*"):
        path.unlink()
    yield
    for path in STORE.parent.glob(STORE.name + "*"):
        path.unlink()


def _params() -> dict:
    return project_config(runtime_params=PARAMS)["parameters"]


def _scoring(spark) -> dict:
    """The time batch inference scores at by default (the latest complete day)."""
    orders = spark.read.format("delta").load(str((LAKE / "silver/orders").resolve()))
    training_set = _params()["training_set"]
    return build_scoring_spine(orders, {"scoring_date": None}, {**training_set, **PARAMS["training_set"]})


def _publish(as_of: str | None) -> None:
    run_pipeline(publish_pipeline(), runtime_params={**PARAMS, "publish_online": {"as_of": as_of}})


def _read(table: str) -> pd.DataFrame:
    return PandasDeltaDataset(filepath=str(LAKE / "features" / table)).load()


LOOKBACK = {
    "customer_activity": pd.Timedelta(days=2),
    "customer_profile": pd.Timedelta(days=3650),
}  # the tightest freshness


def _expected_latest(table: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """Independently, in pandas: per customer the greatest (feature_ts, ingested_at) stamped and known
    by as_of, if within the lookback window."""
    rows = _read(table)
    rows = rows[
        (rows["feature_ts"] <= as_of) & (rows["ingested_at"] <= as_of) & (rows["feature_ts"] >= as_of - LOOKBACK[table])
    ]
    return (
        rows.sort_values(["customer_id", "feature_ts", "ingested_at"])
        .groupby("customer_id")
        .tail(1)
        .set_index("customer_id")
    )


def _digest() -> list[str]:
    return [
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(STORE.parent.glob(STORE.name + "*"))
        if not p.name.endswith("-shm")
    ]


AS_OF = "2026-02-20T00:00:00Z"


def test_the_store_holds_each_customers_latest_row_as_of_the_publish(fresh_store, caplog):
    caplog.set_level(logging.INFO)
    _publish(AS_OF)
    store = SQLiteOnlineStore(str(STORE))
    try:
        for table in TABLES:
            expected = _expected_latest(table, pd.Timestamp(AS_OF))
            state = store.table_state(table)
            assert state["rows"] == len(expected) > 100
            assert state["source_version"] == DeltaTable(str(LAKE / "features" / table)).version()
            assert state["contract_hash"] == parsed_contracts(_params()["feature_tables"])[table].hash
            assert state["as_of"] == pd.Timestamp(AS_OF).to_pydatetime()
            stored = store.get(table, list(expected.index))
            assert set(stored) == set(expected.index)
            for customer in list(expected.index)[:40]:
                row, want = stored[customer], expected.loc[customer]
                assert row["feature_ts"] == want["feature_ts"].to_pydatetime()
                assert row["ingested_at"] == want["ingested_at"].to_pydatetime()
                for feature in expected.columns.drop(["feature_ts", "ingested_at"]):
                    assert (pd.isna(row[feature]) and pd.isna(want[feature])) or row[feature] == want[feature], (
                        table,
                        customer,
                        feature,
                    )
    finally:
        store.close()
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("publish_online: customer_activity")]
    assert len(line) == 1 and " changed (" in line[0] and f"-> store sqlite:{STORE}" in line[0]


def test_a_rerun_on_unchanged_tables_writes_nothing_and_a_changed_customer_is_the_only_key_written(fresh_store, caplog):
    _publish(None)
    store = SQLiteOnlineStore(str(STORE))
    before = {t: store.table_state(t) for t in TABLES}
    digest = _digest()
    caplog.set_level(logging.INFO)
    _publish(None)
    assert _digest() == digest and {t: store.table_state(t) for t in TABLES} == before
    assert any("nothing changed since the last publish" in r.getMessage() for r in caplog.records)
    assert any("(nothing written)" in r.getMessage() for r in caplog.records)

    # One customer's served activity row changes upstream: only that key is written.
    customers = sorted(store.row_hashes("customer_activity")["_key"])
    victim, others = customers[0], customers[1:]
    served_ts = store.get("customer_activity", [victim])[victim]["feature_ts"]
    activity = DeltaTable(str(LAKE / "features/customer_activity"))
    version = activity.version()
    published_before = {c: r["_published_at"] for c, r in store.get("customer_activity", others).items()}
    activity.update(
        predicate=f"customer_id = '{victim}' AND feature_ts = '{served_ts.isoformat()}'", updates={"orders_30d": "99.0"}
    )
    try:
        caplog.clear()
        _publish(None)
        state = store.table_state("customer_activity")
        assert state["source_version"] == version + 1 and state["rows"] == before["customer_activity"]["rows"]
        row = store.get("customer_activity", [victim])[victim]
        assert row["orders_30d"] == 99.0 and row["_source_version"] == version + 1
        assert {c: r["_published_at"] for c, r in store.get("customer_activity", others).items()} == published_before
        assert store.table_state("customer_profile") == before["customer_profile"]
        summary = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("publish_online: customer_activity")
        ]
        assert (
            f"customer_activity {len(customers)} keys, 1 changed (0 new), 0 deleted, v{version} -> v{version + 1}"
            in summary[0]
        )
    finally:
        activity.restore(version)
        store.close()


def test_a_customer_whose_rows_disappear_is_deleted_from_the_store(fresh_store):
    _publish(None)
    profile = DeltaTable(str(LAKE / "features/customer_profile"))
    version = profile.version()
    victim = sorted(_read("customer_profile")["customer_id"])[0]
    store = SQLiteOnlineStore(str(STORE))
    try:
        assert victim in store.get("customer_profile", [victim])
        rows = store.table_state("customer_profile")["rows"]
        profile.delete(f"customer_id = '{victim}'")
        _publish(None)
        assert store.get("customer_profile", [victim]) == {}
        assert store.table_state("customer_profile")["rows"] == rows - 1
    finally:
        profile.restore(version)
        store.close()


def test_online_vectors_equal_the_offline_point_in_time_vectors_at_the_scoring_time(fresh_store, spark):
    """No training/serving skew: published as of the batch scoring time T, the online store gives
    every active customer the same model inputs (values and dtypes, on-demand features included) and
    the same problems as the training set's point-in-time lookups and batch inference's contract
    checks at cutoff T. The project's tenure_days, with a range narrowed so that some customers
    break it, and a number-typed variant with a drop policy check the on-demand path."""
    spine, scoring = _scoring(spark)
    at = datetime.fromisoformat(scoring["scoring_ts"])
    _publish(scoring["scoring_ts"])
    params = _params()
    training_set = {**params["training_set"], **PARAMS["training_set"]}
    tenure = params["on_demand_features"]["tenure_days"]
    on_demand = {
        "tenure_days": {**tenure, "range": [0, 400]},
        "tenure_exact": {**tenure, "type": "number", "range": [1, None], "null_policy": "drop"},
    }
    tables = {t: spark.read.format("delta").load(str((LAKE / "features" / t).resolve())) for t in TABLES}
    offline = look_up_scoring_features(spine, tables, scoring, params["feature_tables"], on_demand, training_set)
    columns = feature_columns(offline.columns, params["feature_tables"], on_demand)
    inputs = [*columns["numeric"], *columns["categorical"]]
    assert {"tenure_days", "tenure_exact"} <= set(inputs)
    contracts = parsed_contracts(params["feature_tables"])
    lookups = resolve_lookups(contracts, training_set)
    reasons = rejection_reasons(offline, contracts, inputs, at, list(RULES), parse_on_demand(on_demand)).alias(
        "_reasons"
    )
    # Converted as the training set is read (Arrow → pandas).
    expected = offline.select("customer_id", *inputs, reasons).toArrow().to_pandas().set_index("customer_id")
    ids = sorted(expected.index)
    assert len(ids) > 100

    store = SQLiteOnlineStore(str(STORE))
    try:
        lookup = OnlineFeatureLookup.from_params(store, params["feature_tables"], lookups, on_demand)
        vectors, problems = lookup.vectors(ids, at, inputs)
    finally:
        store.close()
    pd.testing.assert_frame_equal(vectors, expected.loc[ids, inputs], check_exact=True)  # NaN == NaN; dtypes too
    rejected = {c: list(r) for c, r in expected["_reasons"].items() if len(r)}
    assert rejected, "the scoring time should reject a few customers (freshness), or the comparison proves little"
    on_demand_reasons = [
        reason for found in rejected.values() for reason in found if reason.startswith("tenure_days: range")
    ]
    assert on_demand_reasons, (
        "the narrowed tenure range should reject some customers, or the on-demand rules prove little"
    )
    assert problems == rejected
