"""The training_set pipeline on a small simulated business: exact rebuild from the recorded
versions, no rewrite on unchanged input, leakage proof and demo metrics."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse_ml.datasets import PandasDeltaDataset
from lakehouse_ml.modeling.guards import TrainingDataError
from lakehouse_ml.pipelines.features.pipeline import create_pipeline as features_pipeline
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline as simulate_pipeline
from lakehouse_ml.pipelines.training_set.nodes import SPEC_PROPERTY, rebuild_training_set
from lakehouse_ml.pipelines.training_set.pipeline import create_pipeline as training_set_pipeline
from tests.helpers import project_config, run_pipeline

LAKE = Path("data/lakehouse/dev")
PARAMS = {
    "simulate": {"n_customers": 400, "n_days": 60},
    "ingest": {"quarantine_gate": {"max_rate": 0.2, "min_rows": 50}},
    "training_set": {"spine": {"warmup_days": 20, "every_days": 5, "horizon_days": 14, "active_lookback_days": 30}},
}


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("training_set")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_pipeline(
            simulate_pipeline() + ingest_pipeline() + features_pipeline() + training_set_pipeline(),
            runtime_params=PARAMS,
        )
        yield root
    finally:
        os.chdir(cwd)


def test_training_set_is_rebuilt_exactly_from_its_recorded_versions(lakehouse, monkeypatch, spark):
    monkeypatch.chdir(lakehouse)
    table = DeltaTable(str(LAKE / "ml/training_set"))
    spec = json.loads(table.metadata().configuration[SPEC_PROPERTY])
    assert set(spec["sources"]) == {"orders_silver", "customer_activity", "customer_profile"}
    assert all(len(s["contract_hash"]) == 16 for n, s in spec["sources"].items() if n != "orders_silver")
    # The on-demand definitions it computed with are part of the spec (a changed one rewrites it).
    assert spec["on_demand"] == {"tenure_days": project_config()["parameters"]["on_demand_features"]["tenure_days"]}
    stored = PandasDeltaDataset(filepath=str(LAKE / "ml/training_set")).load()
    assert len(stored) > 500 and set(stored["churned"]) == {0, 1}

    # Move the sources on: a new refresh of the feature tables must not change the rebuild.
    run_pipeline(features_pipeline(), runtime_params={**PARAMS, "features": {"full_rebuild": True}})
    params = project_config()["parameters"]
    rebuilt = rebuild_training_set(spec, params["feature_tables"], spark).toPandas()
    key = ["customer_id", "cutoff_ts"]
    expected = _utc(stored).sort_values(key).reset_index(drop=True)
    actual = _utc(rebuilt).sort_values(key).reset_index(drop=True)[expected.columns]
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)


def _utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Spark's toPandas gives naive session-time (UTC) nanoseconds, deltalake aware microseconds."""
    frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
    return frame


def test_unchanged_inputs_do_not_rewrite_the_training_set_and_a_changed_on_demand_definition_does(
    lakehouse, monkeypatch
):
    monkeypatch.chdir(lakehouse)
    run_pipeline(training_set_pipeline(), runtime_params=PARAMS)  # sources moved on in the test above, or not
    version = DeltaTable(str(LAKE / "ml/training_set")).version()
    run_pipeline(training_set_pipeline(), runtime_params=PARAMS)
    assert DeltaTable(str(LAKE / "ml/training_set")).version() == version
    # A changed on-demand definition is a changed training set.
    run_pipeline(
        training_set_pipeline(), runtime_params={**PARAMS, "on_demand_features": {"tenure_days": {"range": [0, 1000]}}}
    )
    assert DeltaTable(str(LAKE / "ml/training_set")).version() > version


def test_no_feature_row_comes_from_after_its_cutoff(lakehouse, monkeypatch):
    monkeypatch.chdir(lakehouse)
    frame = PandasDeltaDataset(filepath=str(LAKE / "ml/training_set")).load()
    for table in ("customer_activity", "customer_profile"):
        matched = frame[frame[f"{table}__feature_ts"].notna()]
        assert len(matched) > 0.5 * len(frame)
        assert (matched[f"{table}__feature_ts"] <= matched["cutoff_ts"]).all()
        assert (matched[f"{table}__ingested_at"] <= matched["cutoff_ts"]).all()
    assert (frame["tenure_days"].dropna() >= 0).all()
    assert not frame.duplicated(["customer_id", "cutoff_ts"]).any()


def test_a_disabled_feature_table_is_skipped_and_the_loop_still_runs(lakehouse, monkeypatch):
    """Only orders is required: without customers the profile table is disabled by its contract."""
    monkeypatch.chdir(lakehouse)
    disabled = {**PARAMS, "feature_tables": {"customer_profile": {"enabled": False}}}
    profile_version = DeltaTable(str(LAKE / "features/customer_profile")).version()
    run_pipeline(features_pipeline() + training_set_pipeline(), runtime_params=disabled)
    assert DeltaTable(str(LAKE / "features/customer_profile")).version() == profile_version
    frame = PandasDeltaDataset(filepath=str(LAKE / "ml/training_set")).load()
    assert not [c for c in frame.columns if c.startswith("customer_profile__")]
    assert "tenure_days" not in frame.columns  # its input, customer_profile__signup_ts, is not looked up
    spec = json.loads(DeltaTable(str(LAKE / "ml/training_set")).metadata().configuration[SPEC_PROPERTY])
    assert spec["on_demand"] == {}
    assert frame["customer_activity__orders_30d"].notna().mean() > 0.5


def _deliver_everything_at_the_end(table: Path) -> None:
    """Every row's availability time becomes the table's last delivery, as when one file delivers
    the whole history: after every cutoff (the last cutoff is a horizon before the data ends)."""
    delta = DeltaTable(str(table))
    rows = delta.to_pyarrow_table()
    late = pa.array(
        [pa.compute.max(rows["ingested_at"]).as_py()] * rows.num_rows, rows.schema.field("ingested_at").type
    )
    rows = rows.set_column(rows.schema.get_field_index("ingested_at"), "ingested_at", late)
    write_deltalake(str(table), rows, mode="overwrite", partition_by=delta.metadata().partition_columns or None)


def test_feature_rows_all_known_after_the_cutoffs_fail_with_the_availability_cause(lakehouse, tmp_path, monkeypatch):
    """Nothing was known yet at any cutoff: the training set fails before it is written, naming
    each table, its counts and the availability setting, instead of holding all-NULL features."""
    late_lake = tmp_path / "late"
    shutil.copytree(lakehouse, late_lake)
    monkeypatch.chdir(late_lake)
    for table in ("customer_activity", "customer_profile"):
        _deliver_everything_at_the_end(LAKE / "features" / table)
    version = DeltaTable(str(LAKE / "ml/training_set")).version()
    with pytest.raises(TrainingDataError) as raised:
        run_pipeline(training_set_pipeline(), runtime_params=PARAMS)
    message = str(raised.value)
    for table in ("customer_activity", "customer_profile"):
        assert f"lookup '{table}' matched a feature row for 0 of " in message
        assert f"training_set.lookups.{table}.filter_by_ingested_at: false" in message
    assert message.count("became known (ingested_at, the availability time) only after the cutoff") == 2
    assert "training_set.guards.min_matched_share expects at least 80.0%" in message
    assert DeltaTable(str(LAKE / "ml/training_set")).version() == version  # nothing written


def test_leakage_demo_shows_naive_joins_inflating_auc(lakehouse, monkeypatch, spark):
    from lakehouse_ml.pipelines.training_set.nodes import build_label_spine, leakage_demo

    monkeypatch.chdir(lakehouse)
    params = project_config(runtime_params=PARAMS)["parameters"]
    training = {
        **params["training_set"],
        **PARAMS["training_set"],
        "spine": {**params["training_set"]["spine"], **PARAMS["training_set"]["spine"]},
    }
    read = lambda table: spark.read.format("delta").load(str((lakehouse / LAKE / table).resolve()))  # noqa: E731
    spine = build_label_spine(read("silver/orders"), training["spine"])
    metrics = leakage_demo(
        read("ml/training_set"),
        spine,
        {"customer_activity": read("features/customer_activity")},
        params["feature_tables"],
        training,
    )
    value = {name: metric["value"] for name, metric in metrics.items()}
    assert 0.5 < value["leakage_demo.auc_point_in_time"] < 1.0
    # features as of the label's end contain the label itself: near-perfect and clearly inflated
    assert value["leakage_demo.auc_naive_label_end"] > value["leakage_demo.auc_point_in_time"] + 0.05
    assert value["leakage_demo.auc_inflation_naive_label_end"] == pytest.approx(
        value["leakage_demo.auc_naive_label_end"] - value["leakage_demo.auc_point_in_time"]
    )
