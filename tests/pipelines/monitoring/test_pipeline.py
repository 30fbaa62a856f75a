"""The monitoring pipeline on a small simulated business with the real catalog, registry and engine:
batch predictions of four days and a few online rows, three registered versions; what each table
holds, re-runs, and actions executed through the registry."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from mlflow import MlflowClient

from lakehouse_ml.datasets import ModelRegistryDataset, PandasDeltaDataset
from lakehouse_ml.governance import os_user
from lakehouse_ml.pipelines.features.pipeline import create_pipeline as features_pipeline
from lakehouse_ml.pipelines.inference.pipeline import create_pipeline as inference_pipeline
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from lakehouse_ml.pipelines.monitoring.pipeline import create_pipeline as monitoring_pipeline
from lakehouse_ml.pipelines.promotion.pipeline import create_pipeline as promotion_pipeline
from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline as simulate_pipeline
from lakehouse_ml.pipelines.training_set.pipeline import create_pipeline as training_set_pipeline
from lakehouse_ml.release import ReleaseRefusedError
from lakehouse_ml.serving.inference_log import SCHEMA as LOG_SCHEMA
from tests.helpers import MODEL_NAME, delete_model, merged_parameters, register_version, run_pipeline
from tests.pipelines.monitoring.lifecycle import write_baseline

LAKE = Path("data/lakehouse/dev")
PARAMS = {
    "simulate": {"n_customers": 400, "n_days": 60},
    "ingest": {"quarantine_gate": {"max_rate": 0.2, "min_rows": 50}},
    "training_set": {"spine": {"warmup_days": 20, "every_days": 5, "horizon_days": 14, "active_lookback_days": 30}},
    "inference": {"max_rejected_rate": 0.5},
}
ALERT_ONLY = {"actions": {"policy": dict.fromkeys(["fix_upstream", "retrain", "rollback", "block_promotion"], "alert")}}
# 02-10 is labelled (14 days later is before the data ends on 03-01); the last three days are not yet.
SCORING_DATES = ["2026-02-10", "2026-02-26", "2026-02-27", "2026-02-28"]
SIGNAL_KEY = ["window_start", "source", "model_version", "slice", "slice_value", "feature", "metric"]


def _read(table: str) -> pd.DataFrame:
    return PandasDeltaDataset(filepath=str(LAKE / table)).load()


def _log_rows(features: dict) -> pa.Table:
    """Three online rows on 2026-02-28: a served row, a served row flagged for an unknown customer, a shadow score."""
    at = datetime(2026, 2, 28, 12, tzinfo=timezone.utc)
    rows = [
        ("r1", 0, "champion", True, "c-1", 0.2, [], json.dumps(features)),
        ("r2", 0, "champion", True, None, 0.9, ["unknown_customer"], json.dumps(features)),
        ("r1", 0, "shadow", False, "c-1", 0.4, [], json.dumps(features)),
    ]
    columns = {name: [] for name in LOG_SCHEMA.names}
    for request, index, role, served, customer, probability, flags, payload in rows:
        values = {
            "request_id": request,
            "row_index": index,
            "role": role,
            "served": served,
            "logged_at": at,
            "log_date": "2026-02-28",
            "endpoint": "score",
            "customer_id": customer,
            "model_name": MODEL_NAME,
            "model_version": "2" if served else "3",
            "probability": probability,
            "threshold": 0.3,
            "decision": int(probability >= 0.3),
            "latency_ms": 5.0,
            "features": payload,
            "flags": flags,
        }
        for name in LOG_SCHEMA.names:
            columns[name].append(values[name])
    return pa.table(columns, schema=LOG_SCHEMA)


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory, spark):
    """Four days of batch predictions by version 2 (champion; version 1 previous_champion, version 3
    challenger) and three online rows, each version with its baseline."""
    root = tmp_path_factory.mktemp("monitoring")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_pipeline(
            simulate_pipeline() + ingest_pipeline() + features_pipeline() + training_set_pipeline(),
            runtime_params=PARAMS,
        )
        training_set = _read("ml/training_set")
        cutoffs = sorted(training_set["cutoff_ts"].unique())
        train, test = cutoffs[:-2], cutoffs[-2:]
        # Slice baselines from 30 rows on both sides (the default 200 is more than this business has).
        params = merged_parameters({**PARAMS, "monitoring": {"drift": {"min_slice_rows": 30}}})
        versions = []
        for regularisation in (1.0, 0.5, 0.1):
            version = register_version(training_set, train, regularisation=regularisation, params=params)
            version["baseline"] = write_baseline(spark, version, training_set, train, test, params)
            versions.append(version)
        client = MlflowClient()
        for alias, number in (("previous_champion", "1"), ("champion", "2"), ("challenger", "3")):
            client.set_registered_model_alias(MODEL_NAME, alias, number)
        for day in SCORING_DATES:
            run_pipeline(
                inference_pipeline(),
                runtime_params={**PARAMS, "inference": {**PARAMS["inference"], "scoring_date": day}},
            )
        features = (
            training_set[versions[1]["inputs"]].iloc[0].where(training_set[versions[1]["inputs"]].iloc[0].notna(), None)
        )
        write_deltalake(
            str(LAKE / "monitoring/inference_log"), _log_rows(features.to_dict()), partition_by=["log_date"]
        )
        run_pipeline(monitoring_pipeline(), runtime_params={**PARAMS, "monitoring": ALERT_ONLY})
        yield {"root": root, "versions": versions}
    finally:
        os.chdir(cwd)
        delete_model()


def test_every_window_of_each_source_is_measured_once_per_feature_metric_and_slice(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    drift = _read("monitoring/drift_metrics")

    windows = drift.groupby("source")["window_start"].unique().map(lambda days: sorted(str(d) for d in days)).to_dict()
    assert windows == {"batch": SCORING_DATES, "online": ["2026-02-28"]}
    assert set(drift["model_version"]) == {"2"}  # the shadow row of version 3 was never served
    assert not drift.duplicated(SIGNAL_KEY).any()
    inputs = lakehouse["versions"][1]["inputs"]
    all_slice = drift[(drift["slice"] == "all") & (drift["source"] == "batch")]
    main = all_slice[all_slice["metric"].isin(["psi", "js_distance"]) & (all_slice["feature"] != "__prediction__")]
    assert set(main["feature"]) == set(inputs) and len(main) == len(inputs) * len(SCORING_DATES)
    assert (main.loc[main["metric"] == "psi", "details"].map(lambda d: json.loads(d)["log_base"]) == "e").all()
    # Slices with a baseline of their own (here: 30 rows on both sides) are compared with it; windows of
    # a slice with fewer than monitoring.drift.min_slice_rows (200) rows get figures but no verdict.
    # The model's slices (training.slices, kept in its baseline), the bucketed tenure included.
    assert {"all", "country", "plan_tier", "tenure_bucket"} == set(drift["slice"])
    assert set(drift.loc[drift["slice"] == "tenure_bucket", "slice_value"]) <= {
        "0_90",
        "90_180",
        "180_365",
        "365_plus",
        "unknown",
    }
    baseline_slices = lakehouse["versions"][1]["baseline"]["slices"]
    assert set(drift.loc[drift["slice"] == "country", "slice_value"]) == set(baseline_slices["country"])
    sliced = drift[(drift["slice"] != "all") & drift["metric"].isin(["psi", "js_distance"])]
    assert set(sliced.loc[sliced["n_rows"] < 200, "status"]) <= {"untrusted", "no_data"}
    # A slice is compared with its own training rows: the country inside country=DE does not drift.
    de = drift[
        (drift["slice_value"] == "DE")
        & (drift["metric"] == "js_distance")
        & (drift["feature"] == "customer_profile__country")
        & (drift["source"] == "batch")
    ]
    assert (de["value"] == 0).all() and len(de) == len(SCORING_DATES)
    # Prediction drift and each window against the previous one (not for the first window).
    prediction = all_slice[all_slice["feature"] == "__prediction__"]
    assert {"psi", "positive_rate_change", "positive_rate", "psi_vs_previous"} <= set(prediction["metric"])
    previous = prediction[prediction["metric"] == "psi_vs_previous"]
    assert sorted(str(d) for d in previous["window_start"]) == SCORING_DATES[1:]
    assert set(drift["status"]) <= {"ok", "warn", "act", "no_data", "untrusted"}


def test_performance_is_realized_once_labels_arrive_and_estimated_before(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    performance = _read("monitoring/performance_metrics")
    overall = performance[(performance["slice"] == "all") & (performance["source"] == "batch")]

    countries = performance.loc[performance["slice"] == "country", "slice_value"]
    assert set(countries) >= {"DE", "FR"}  # slices read from the served inputs
    realized = overall[overall["basis"] == "realized"]
    assert sorted({str(d) for d in realized["window_start"]}) == ["2026-02-10"]  # the only window past its horizon
    estimated = overall[overall["metric"] == "estimated_roc_auc"]
    assert sorted(str(d) for d in estimated["window_start"]) == SCORING_DATES
    # Against the reference: act/warn levels are the version's test-window ROC AUC minus the allowed drops.
    reference = lakehouse["versions"][1]["baseline"]["reference"]["roc_auc"]["value"]
    auc = realized[realized["metric"] == "roc_auc"].iloc[0]
    assert (auc["warn"], auc["act"]) == (pytest.approx(reference - 0.03), pytest.approx(reference - 0.05))
    assert auc["lower"] <= auc["value"] <= auc["upper"]
    # The estimate is compared with the real figure where both exist.
    error = overall[overall["metric"] == "estimation_error"]
    est = estimated.set_index(estimated["window_start"].astype(str)).loc["2026-02-10", "value"]
    assert error["value"].iloc[0] == pytest.approx(est - auc["value"])


def test_data_quality_counts_rejections_and_flags_by_hand(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    quality = _read("monitoring/data_quality")
    predictions, rejected = _read("ml/churn_predictions"), _read("ml/rejected_predictions")

    def one(day: str, source: str, metric: str) -> pd.Series:
        rows = quality[
            (quality["window_start"].astype(str) == day) & (quality["source"] == source) & (quality["metric"] == metric)
        ]
        assert len(rows) == 1, (day, source, metric)
        return rows.iloc[0]

    for day in SCORING_DATES:
        scored = (predictions["scoring_date"].astype(str) == day).sum()
        refused = rejected[rejected["scoring_date"].astype(str) == day]
        assert one(day, "batch", "rejected_rate")["value"] == pytest.approx(len(refused) / (scored + len(refused)))
        stale = refused["reason"].str.contains(": freshness").sum()
        assert one(day, "batch", "stale_feature_rate")["value"] == pytest.approx(stale / (scored + len(refused)))
    # Online: one of the two served rows carried a flag; the shadow row does not count.
    flagged = one("2026-02-28", "online", "flagged_rate")
    assert (flagged["value"], flagged["n_rows"], flagged["status"]) == (0.5, 2, "act")
    # The online JSON carries exactly the model inputs: no schema change.
    assert one("2026-02-28", "online", "schema_change")["value"] == 0


def test_alerts_only_record_and_a_rerun_replaces_its_windows(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    before = {t: _read(f"monitoring/{t}") for t in ("drift_metrics", "performance_metrics", "data_quality")}
    actions = _read("monitoring/actions")
    assert set(actions["mode"]) <= {"alert"} and set(actions["status"]) <= {"alerted", "blocked"}

    run_pipeline(monitoring_pipeline(), runtime_params={**PARAMS, "monitoring": ALERT_ONLY})

    for table, frame in before.items():
        again = _read(f"monitoring/{table}")
        assert len(again) == len(frame) and not again.duplicated(SIGNAL_KEY).any(), table
    assert len(_read("monitoring/actions")) == len(actions)  # same action ids: merged, not appended
    assert ModelRegistryDataset(model_name=MODEL_NAME).load()["aliases"]["champion"] == "2"


def test_windows_and_versions_outside_this_run_are_kept_but_never_acted_on(lakehouse, monkeypatch):
    """The tables keep earlier runs' rows, e.g. of a version no longer served: a run neither reads them
    as its own signals nor rewrites them."""
    monkeypatch.chdir(lakehouse["root"])
    drift = _read("monitoring/drift_metrics")
    retired = drift[drift["model_version"] == "2"].assign(model_version="9", status="act")
    write_deltalake(str(LAKE / "monitoring/drift_metrics"), retired, mode="append")
    actions = len(_read("monitoring/actions"))

    run_pipeline(monitoring_pipeline(), runtime_params={**PARAMS, "monitoring": ALERT_ONLY})

    again = _read("monitoring/drift_metrics")
    assert (again["model_version"] == "9").sum() == len(retired)  # left as they were
    assert len(_read("monitoring/actions")) == actions  # its 'act' rows fired nothing


def test_executed_actions_roll_back_through_the_registry_and_block_the_challenger(lakehouse, monkeypatch):
    """A rule on the online flag rate (one window is enough here) executes a rollback and a promotion block."""
    monkeypatch.chdir(lakehouse["root"])
    rules = [
        {
            "name": f"test_{action}",
            "action": action,
            "table": "data_quality",
            "metrics": ["flagged_rate"],
            "breaching_windows": 1,
            "of_last": 1,
        }
        for action in ("rollback", "block_promotion")
    ]
    policy = {
        "actions": {"policy": {**ALERT_ONLY["actions"]["policy"], "rollback": "execute", "block_promotion": "execute"}}
    }

    run_pipeline(monitoring_pipeline(), runtime_params={**PARAMS, "monitoring": policy, "monitoring_rules": rules})

    state = ModelRegistryDataset(model_name=MODEL_NAME).load()
    assert state["aliases"] == {"champion": "1", "challenger": "3"}
    assert "test_block_promotion fired on version 2" in state["versions"]["3"]["tags"]["promotion_blocked"]
    moves = _read("ml/model_promotions")
    rollback = moves[(moves["action"] == "rollback") & (moves["alias"] == "champion")].iloc[0]
    # The rule's rollback is done by whoever runs monitoring (the OS user here), via monitoring.
    assert (rollback["from_version"], rollback["to_version"], rollback["actor"], rollback["via"]) == (
        "2",
        "1",
        os_user(),
        "monitoring",
    )
    assert rollback["reason"] == "monitoring rule test_rollback: 1 of the last 1 windows up to 2026-03-01"
    actions = _read("monitoring/actions").set_index("rule")
    assert (
        actions.loc["test_rollback", "status"] == "executed"
        and actions.loc["test_block_promotion", "target_version"] == "3"
    )
    evidence = json.loads(actions.loc["test_rollback", "evidence"])
    assert evidence[0]["rows"][0]["metric"] == "flagged_rate" and evidence[0]["rows"][0]["value"] == 0.5

    # Monitoring again on the same windows: the same actions, already executed, are not executed twice.
    run_pipeline(monitoring_pipeline(), runtime_params={**PARAMS, "monitoring": policy, "monitoring_rules": rules})
    again = _read("monitoring/actions").set_index("rule")
    assert list(again.loc[["test_rollback", "test_block_promotion"], "status"]) == ["executed", "executed"]
    assert (again.loc["test_rollback", "fired_at"], len(again)) == (
        actions.loc["test_rollback", "fired_at"],
        len(actions),
    )
    assert len(_read("ml/model_promotions")) == len(moves)

    # The promotion pipeline refuses the blocked challenger and says how to lift the block.
    with pytest.raises(ReleaseRefusedError, match="blocked from promotion.*delete_model_version_tag"):
        run_pipeline(promotion_pipeline(), runtime_params=PARAMS)


def test_before_anything_was_served_monitoring_writes_empty_tables_and_fires_nothing(tmp_path, monkeypatch, spark):
    """An environment whose challenger waits for approval has no predictions yet: the run still succeeds."""
    monkeypatch.chdir(tmp_path)
    small = {
        "simulate": {"n_customers": 100, "n_days": 10},
        "ingest": {"quarantine_gate": {"max_rate": 0.5, "min_rows": 50}},
    }
    run_pipeline(simulate_pipeline() + ingest_pipeline(), runtime_params=small)

    run_pipeline(monitoring_pipeline(), runtime_params=small)

    for table in ("drift_metrics", "performance_metrics", "data_quality", "actions"):
        assert _read(f"monitoring/{table}").empty, table
    assert (tmp_path / "data/08_reporting/dev/monitoring/report.html").is_file()
