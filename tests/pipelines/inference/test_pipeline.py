"""The inference pipeline on a small simulated business, with a real MLflow registry (tmp SQLite):
a tiny model trained on the training set the real pipelines built is registered and made
`champion` (``tests.helpers.register_version``), then the batch scores are checked against the
model itself, the training set's features, the registry and the contracts."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.pipeline_registry import default_pipeline
from lakehouse_ml.pipelines.features.pipeline import create_pipeline as features_pipeline
from lakehouse_ml.pipelines.inference.pipeline import create_pipeline as inference_pipeline
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline as simulate_pipeline
from lakehouse_ml.pipelines.training_set.pipeline import create_pipeline as training_set_pipeline
from tests.helpers import MODEL_NAME, delete_model, register_version, run_pipeline

LAKE = Path("data/lakehouse/dev")
THRESHOLD = 0.3
PARAMS = {
    "simulate": {"n_customers": 400, "n_days": 60},
    "ingest": {"quarantine_gate": {"max_rate": 0.2, "min_rows": 50}},
    "training_set": {"spine": {"warmup_days": 20, "every_days": 5, "horizon_days": 14, "active_lookback_days": 30}},
    # A small business has few rows per day: a handful of freshness rejections is a large share.
    "inference": {"max_rejected_rate": 0.5},
}


def _read(table: str) -> pd.DataFrame:
    return PandasDeltaDataset(filepath=str(LAKE / table)).load()


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory, spark):
    """A small lakehouse built by the real pipelines, and a registered champion trained on it."""
    root = tmp_path_factory.mktemp("inference")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_pipeline(
            simulate_pipeline() + ingest_pipeline() + features_pipeline() + training_set_pipeline(),
            runtime_params=PARAMS,
        )
        training_set = _read("ml/training_set")
        champion = register_version(
            training_set, training_set["cutoff_ts"].unique(), threshold=THRESHOLD, alias="champion"
        )
        yield {"root": root, "training_set": training_set, "champion": champion}
    finally:
        os.chdir(cwd)
        delete_model()


def _infer(**inference) -> None:
    run_pipeline(inference_pipeline(), runtime_params={**PARAMS, "inference": {**PARAMS["inference"], **inference}})


def _mine(frame: pd.DataFrame, day: date, version: str) -> pd.DataFrame:
    return frame[(frame["scoring_date"] == day) & (frame["model_version"] == version)]


def test_the_champion_is_read_by_one_node_only():
    """One resolution of the alias per run: a second reader could see a moved alias."""
    readers = [n.name for n in inference_pipeline().nodes if any(i.startswith("champion_model@") for i in n.inputs)]
    assert readers == ["inference.score_scoring_rows"]


def test_predictions_name_their_version_and_equal_the_model_on_the_training_set_features(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    champion, training_set = lakehouse["champion"], lakehouse["training_set"]
    cutoff = training_set["cutoff_ts"].max()
    day = cutoff.date() - timedelta(days=1)  # scoring "as of the end of" day = the training cutoff
    _infer(scoring_date=day.isoformat())

    predictions = _mine(_read("ml/churn_predictions"), day, champion["version"]).reset_index(drop=True)
    assert len(predictions) > 50
    assert set(predictions["model_name"]) == {MODEL_NAME} and set(predictions["model_version"]) == {champion["version"]}
    assert set(predictions["model_alias"]) == {"champion"} and set(predictions["model_run_id"]) == {champion["run_id"]}
    assert (predictions["scoring_ts"] == cutoff).all()
    assert (predictions["threshold"] == THRESHOLD).all()
    assert (predictions["decision"] == (predictions["probability"] >= THRESHOLD).astype(int)).all()
    versions = dict(predictions["feature_table_versions"].iloc[0])
    assert versions == {
        t: DeltaTable(str(LAKE / "features" / t)).version() for t in ("customer_activity", "customer_profile")
    }
    assert (predictions["orders_version"] == DeltaTable(str(LAKE / "silver/orders")).version()).all()
    assert not predictions["customer_id"].duplicated().any()

    # The scoring rows are the training set's rows at that cutoff: same customers, same features.
    rows = _read("_work/inference_scored_rows").set_index("customer_id").sort_index()
    expected = training_set[training_set["cutoff_ts"] == cutoff].set_index("customer_id").sort_index()
    assert list(rows.index) == list(expected.index)
    pd.testing.assert_frame_equal(rows[champion["inputs"]], expected[champion["inputs"]], check_dtype=False)

    # The floor: the loaded model's predict_proba on the same rows in pandas gives the same numbers.
    scored = rows.loc[predictions["customer_id"]]
    floor = champion["model"].predict_proba(scored[champion["inputs"]])[:, 1]
    np.testing.assert_allclose(predictions["probability"].to_numpy(), floor, rtol=0, atol=1e-12)
    # Each prediction keeps the inputs it was scored on (for monitoring): the same values.
    stored = pd.DataFrame([json.loads(text) for text in predictions["features"]], index=predictions["customer_id"])
    pd.testing.assert_frame_equal(
        stored.reindex(columns=champion["inputs"]), scored[champion["inputs"]], check_dtype=False, check_names=False
    )
    # Every spine row is either scored or rejected, never both.
    rejected = _mine(_read("ml/rejected_predictions"), day, champion["version"])
    assert set(rejected["customer_id"]).isdisjoint(predictions["customer_id"])
    assert len(rejected) + len(predictions) == len(rows)


def test_the_default_scoring_date_is_the_latest_complete_day(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    _infer(scoring_date=None)
    last_delivery = _read("silver/orders")["delivered_at"].max()
    expected = last_delivery.date() - timedelta(days=1)
    predictions = _read("ml/churn_predictions")
    assert expected in set(predictions["scoring_date"])
    # Active = an order in the lookback before the scoring time, as in the label spine.
    orders = _read("silver/orders")
    at = pd.Timestamp(expected + timedelta(days=1), tz="UTC")
    active = set(
        orders.loc[(orders["event_ts"] >= at - pd.Timedelta(days=30)) & (orders["event_ts"] < at), "customer_id"]
    )
    scored = set(predictions.loc[predictions["scoring_date"] == expected, "customer_id"])
    rejected = set(_read("ml/rejected_predictions").query("scoring_date == @expected")["customer_id"])
    assert scored | rejected == active


def test_a_rerun_replaces_its_scoring_date_and_version_and_never_duplicates(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    version = lakehouse["champion"]["version"]
    day = lakehouse["training_set"]["cutoff_ts"].min().date()
    _infer(scoring_date=day.isoformat())
    first = _mine(_read("ml/churn_predictions"), day, version)
    table_version = DeltaTable(str(LAKE / "ml/churn_predictions")).version()
    _infer(scoring_date=day.isoformat())
    second = _mine(_read("ml/churn_predictions"), day, version)
    assert DeltaTable(str(LAKE / "ml/churn_predictions")).version() > table_version  # rewritten, not skipped
    assert len(second) == len(first) and not second["customer_id"].duplicated().any()
    assert second["scored_at"].min() > first["scored_at"].max()
    pd.testing.assert_frame_equal(
        first.drop(columns="scored_at").sort_values("customer_id").reset_index(drop=True),
        second.drop(columns="scored_at").sort_values("customer_id").reset_index(drop=True),
    )


def _scored_row(day: date, version: str, n: int) -> pd.DataFrame:
    """``n`` scored customers of a run with their features' row times."""
    rows = _read("_work/inference_scored_rows")
    return rows[~rows["_rejected"] & (rows["scoring_date"] == day) & (rows["model_version"] == version)].head(n)


def test_rows_breaking_a_contract_are_rejected_with_their_reason_and_not_scored(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    version = lakehouse["champion"]["version"]
    day = lakehouse["training_set"]["cutoff_ts"].max().date()
    _infer(scoring_date=day.isoformat())
    victims = _scored_row(day, version, 3)
    assert len(victims) == 3
    (a, a_ts), (b, b_ts), (c, c_ts) = [
        (row.customer_id, row.customer_activity__feature_ts if i == 0 else row.customer_profile__feature_ts)
        for i, row in enumerate(victims.itertuples())
    ]
    activity, profile = (
        DeltaTable(str(LAKE / "features/customer_activity")),
        DeltaTable(str(LAKE / "features/customer_profile")),
    )
    before = activity.version(), profile.version()

    def where(customer, ts):
        return f"customer_id = '{customer}' AND feature_ts = '{ts.isoformat()}'"

    activity.update(predicate=where(a, a_ts), updates={"orders_30d": "-3.0"})
    profile.update(predicate=where(b, b_ts), updates={"plan_tier": "'platinum'"})
    profile.update(predicate=where(c, c_ts), updates={"monthly_price": "NULL"})
    try:
        _infer(scoring_date=day.isoformat())
        rejected = _mine(_read("ml/rejected_predictions"), day, version).set_index("customer_id")
        assert rejected.loc[a, "reason"] == "customer_activity.orders_30d: range expected values >= 0, got -3.0"
        assert rejected.loc[b, "reason"] == (
            "customer_profile.plan_tier: allowed_values expected one of ['basic', 'standard', 'premium'], got 'platinum'"
        )
        assert (
            rejected.loc[c, "reason"]
            == "customer_profile.monthly_price: null_policy expected a value (policy drop), got null"
        )
        assert list(rejected.loc[a, "rejection_reasons"]) == [rejected.loc[a, "reason"]]
        assert '"customer_activity__orders_30d":-3.0' in rejected.loc[a, "features"]
        assert (rejected["model_version"] == version).all() and rejected["rejected_at"].notna().all()
        scored = set(_mine(_read("ml/churn_predictions"), day, version)["customer_id"])
        assert not {a, b, c} & scored
    finally:
        activity.restore(before[0])
        profile.restore(before[1])
    # Fixed upstream and re-run: scored again, and their rejections are gone (not left behind).
    _infer(scoring_date=day.isoformat())
    assert {a, b, c} <= set(_mine(_read("ml/churn_predictions"), day, version)["customer_id"])
    assert not {a, b, c} & set(_mine(_read("ml/rejected_predictions"), day, version)["customer_id"])


def test_too_many_rejections_fail_the_run_before_anything_is_published(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    tables = ("ml/churn_predictions", "ml/rejected_predictions")
    before = [DeltaTable(str(LAKE / t)).version() for t in tables]
    # A contract no customer with orders meets: most of the spine breaks it.
    strict = {"feature_tables": {"customer_activity": {"features": {"orders_30d": {"range": [1000, None]}}}}}
    day = lakehouse["training_set"]["cutoff_ts"].max().date().isoformat()
    with pytest.raises(
        Exception,
        match=r"break their feature contracts, above inference.max_rejected_rate=50.0%.*Top reasons: customer_activity.orders_30d: range x",
    ):
        run_pipeline(
            inference_pipeline(),
            runtime_params={**PARAMS, **strict, "inference": {**PARAMS["inference"], "scoring_date": day}},
        )
    assert [DeltaTable(str(LAKE / t)).version() for t in tables] == before


def test_without_a_champion_the_run_fails_naming_model_and_alias(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse["root"])
    client = MlflowClient()
    client.delete_registered_model_alias(MODEL_NAME, "champion")
    try:
        with pytest.raises(
            Exception,
            match=r"'dev.ml.churn_classifier' has no 'champion' alias.*run the registration and promotion pipelines",
        ):
            _infer()
    finally:
        client.set_registered_model_alias(MODEL_NAME, "champion", lakehouse["champion"]["version"])


def test_in_the_default_run_an_environment_without_a_champion_scores_nothing(lakehouse, monkeypatch, caplog):
    """The default run's inference reads `champion_model@if_any`: no champion (a challenger waiting
    for approval) means nothing scored and nothing written, not a failed run."""
    monkeypatch.chdir(lakehouse["root"])
    tables = ("ml/churn_predictions", "ml/rejected_predictions")
    _infer()  # the tables exist, as after an earlier release
    before = [DeltaTable(str(LAKE / t)).version() for t in tables]
    client = MlflowClient()
    client.delete_registered_model_alias(MODEL_NAME, "champion")
    caplog.set_level("INFO")
    try:
        run_pipeline(default_pipeline({"inference": inference_pipeline()}), runtime_params=PARAMS)
    finally:
        client.set_registered_model_alias(MODEL_NAME, "champion", lakehouse["champion"]["version"])
    assert "inference: no champion yet" in caplog.text and "inference: skipped (no champion)" in caplog.text
    assert [DeltaTable(str(LAKE / t)).version() for t in tables] == before
