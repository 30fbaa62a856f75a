"""The features pipeline on the project's catalog: incremental refreshes equal a full rebuild,
keys stay unique, backfills are audited, the contract travels with the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.pipelines.features.pipeline import create_pipeline as features_pipeline
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline as simulate_pipeline
from tests.helpers import run_pipeline

LAKE = Path("data/lakehouse/dev")
# A third table, declared here only (runtime parameters merge into `feature_tables` like an
# environment's file): the latest session per customer, from a source no base table reads.
LAST_SESSION = {
    "description": "The customer's latest session, valid from its start.",
    "owner": "tests",
    "entity_keys": ["customer_id"],
    "timestamp_key": "feature_ts",
    "ingested_at_key": "ingested_at",
    "grain": "customer x session",
    "refresh": "daily",
    "source": "silver.sessions",
    "kind": "changes",
    "features": {
        "device": {
            "unit": "category",
            "freshness": "30 days",
            "null_policy": {"impute": "unknown"},
            "compute": {"column": "device"},
        },
        "pages": {
            "unit": "pages",
            "freshness": "30 days",
            "null_policy": "keep",
            "range": [1, None],
            "compute": {"column": "pages"},
        },
    },
}
SMALL = {
    "simulate": {"n_customers": 250, "n_days": 40},
    "ingest": {"quarantine_gate": {"max_rate": 0.2, "min_rows": 50}},
    "feature_tables": {"last_session": LAST_SESSION},
}
TABLES = ("customer_activity", "customer_profile", "last_session")
KEYS = ["customer_id", "feature_ts"]


def read(table: str) -> pd.DataFrame:
    return PandasDeltaDataset(filepath=str(LAKE / table)).load()


def sorted_table(table: str) -> pd.DataFrame:
    frame = read(table)
    return frame.sort_values(KEYS).reset_index(drop=True)[sorted(frame.columns)]


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory, spark):
    """A small business ingested and featurised in two steps: 30 deliveries, then 10 more."""
    root = tmp_path_factory.mktemp("features")
    cwd = Path.cwd()
    import os

    os.chdir(root)
    try:
        run_pipeline(simulate_pipeline(), runtime_params=SMALL)
        held = root / "held"
        for source in ("orders", "sessions", "customers", "tickets"):
            for folder in sorted((root / "data/01_raw/landing/dev" / source).iterdir())[30:]:
                target = held / source / folder.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(folder), target)
        run_pipeline(ingest_pipeline() + features_pipeline(), runtime_params=SMALL)
        first = {t: sorted_table(f"features/{t}") for t in TABLES}
        for source_folder in held.iterdir():
            for folder in source_folder.iterdir():
                shutil.move(str(folder), root / "data/01_raw/landing/dev" / source_folder.name / folder.name)
        run_pipeline(ingest_pipeline() + features_pipeline(), runtime_params=SMALL)
        yield root, first
    finally:
        os.chdir(cwd)


def test_incremental_refresh_equals_a_full_rebuild(lakehouse, monkeypatch):
    root, _ = lakehouse
    monkeypatch.chdir(root)
    log = read("monitoring/feature_refreshes").sort_values("refreshed_at")
    activity = log[log["table"] == "customer_activity"]
    assert activity["mode"].tolist() == ["full", "incremental"]
    # the second refresh recomputed only from the first changed day on (late arrivals included)
    assert activity["rows_upserted"].iloc[1] < len(read("features/customer_activity"))
    assert log[log["table"] == "last_session"]["mode"].tolist() == ["full", "incremental"]
    incremental = {t: sorted_table(f"features/{t}") for t in TABLES}
    assert len(incremental["last_session"]) > 0

    run_pipeline(features_pipeline(), runtime_params={**SMALL, "features": {"full_rebuild": True}})
    for table, frame in incremental.items():
        pd.testing.assert_frame_equal(sorted_table(f"features/{table}"), frame)


def test_keys_are_unique_and_rows_respect_the_contract(lakehouse, monkeypatch):
    root, first = lakehouse
    monkeypatch.chdir(root)
    for table in TABLES:
        frame = read(f"features/{table}")
        assert not frame.duplicated(KEYS).any()
        assert len(frame) > len(first[table])  # the second delivery batch added rows
    activity = read("features/customer_activity")
    assert (activity["orders_7d"] <= activity["orders_30d"]).all() and (
        activity["orders_30d"] <= activity["orders_90d"]
    ).all()
    assert (activity["feature_ts"].dt.hour == 0).all()  # end of day
    assert activity["ingested_at"].notna().all()  # every row says when its value became known


def test_backfill_replaces_a_range_in_one_commit_and_is_audited(lakehouse, monkeypatch):
    root, _ = lakehouse
    monkeypatch.chdir(root)
    before = sorted_table("features/customer_activity")
    version = DeltaTable(str(LAKE / "features/customer_activity")).version()
    run_pipeline(
        features_pipeline(),
        runtime_params={
            **SMALL,
            "features": {"backfill": {"start": "2026-01-10", "end": "2026-01-20", "tables": ["customer_activity"]}},
        },
    )
    table = DeltaTable(str(LAKE / "features/customer_activity"))
    assert table.version() == version + 1  # one MERGE commit (the contract was already stamped)
    assert table.history(1)[0]["operation"] == "MERGE"
    pd.testing.assert_frame_equal(sorted_table("features/customer_activity"), before)  # same data, same rows
    audit = read("monitoring/feature_refreshes").sort_values("refreshed_at").iloc[-1]
    assert (audit["table"], audit["mode"], audit["scope"]) == (
        "customer_activity",
        "backfill",
        "feature days 2026-01-10..2026-01-20",
    )
    assert (audit["version_before"], audit["version_after"]) == (version, version + 1)
    assert (
        audit["rows_upserted"]
        == ((before["feature_ts"] >= "2026-01-11") & (before["feature_ts"] <= "2026-01-21")).sum()
    )
    assert table.metadata().configuration["lakehouse_ml.contract.hash"] == audit["contract_hash"]
    summaries = read("monitoring/feature_summaries")
    assert set(summaries[summaries["table"] == "customer_activity"]["version"]) >= {version + 1}


def test_a_contract_violation_fails_the_refresh_and_publishes_nothing(lakehouse, monkeypatch):
    from lakehouse_ml.features.validation import FeatureContractViolation

    root, _ = lakehouse
    monkeypatch.chdir(root)
    version = DeltaTable(str(LAKE / "features/customer_activity")).version()
    stricter = {
        "feature_tables": {"customer_activity": {"features": {"orders_7d": {"range": [0, 1]}}}},
        "features": {"full_rebuild": True},
    }
    with pytest.raises(
        FeatureContractViolation,
        match=r"customer_activity\.orders_7d: range expected values in \[0, 1\], got \d+ values out of range",
    ):
        run_pipeline(features_pipeline(), runtime_params={**SMALL, **stricter})
    assert DeltaTable(str(LAKE / "features/customer_activity")).version() == version
