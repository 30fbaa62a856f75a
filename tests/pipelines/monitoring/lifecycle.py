"""Test helpers for monitoring: register a model version the way the loop does (logged with a signature,
run_id and operating_threshold tags) and store its monitoring baseline with the evaluation node's function."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from pyspark.sql import functions as F

from lakehouse_ml.datasets import SparkDeltaDataset
from lakehouse_ml.monitoring.baseline import build_monitoring_baseline, servable_rows
from lakehouse_ml.pipelines.tuning.nodes import build_model_pipeline, feature_columns
from tests.helpers import project_config

MODEL_NAME = "dev.ml.churn_classifier"
BASELINES = "data/lakehouse/dev/monitoring/baselines"
SLICES = {"country": "customer_profile__country", "plan_tier": "customer_profile__plan_tier"}


def register_version(spark, training_set: pd.DataFrame, train_cutoffs, test_cutoffs, *, threshold: float = 0.3,
                     alias: str | None = None, regularisation: float = 1.0, min_slice_rows: int = 30) -> dict:
    """Fit a logistic regression on ``train_cutoffs``, register it, and store its baseline (training rows,
    scores on ``test_cutoffs``, per slice value with ``min_slice_rows``) in monitoring.baselines;
    ``alias`` (e.g. champion) is set when given."""
    params = project_config()["parameters"]
    contracts = {name: params[name] for name in ("customer_activity", "customer_profile")}
    columns = feature_columns(list(training_set.columns), contracts, ["tenure_days"])
    inputs = [*columns["numeric"], *columns["categorical"]]
    stamps = ["customer_activity__feature_ts", "customer_profile__feature_ts"]
    train = training_set[training_set["cutoff_ts"].isin(list(train_cutoffs))]
    test = training_set[training_set["cutoff_ts"].isin(list(test_cutoffs))]
    test = test[test[stamps].notna().all(axis=1)]  # as the evaluation node: the rows inference would score
    model = build_model_pipeline(
        "logistic_regression", {"C": regularisation}, columns["numeric"], columns["categorical"], columns["imputation"]
    )
    model.fit(train[inputs], train["churned"])
    example = train[inputs].head(3)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(example, model.predict_proba(example)),
            pyfunc_predict_fn="predict_proba", serialization_format="cloudpickle",
        )
    client = MlflowClient()
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME).version)
    client.set_model_version_tag(MODEL_NAME, version, "run_id", run.info.run_id)
    client.set_model_version_tag(MODEL_NAME, version, "validation_status", "passed")
    client.set_model_version_tag(MODEL_NAME, version, "operating_threshold", str(threshold))
    if alias:
        client.set_registered_model_alias(MODEL_NAME, alias, version)

    training_rows = servable_rows(spark.read.format("delta").load("data/lakehouse/dev/ml/training_set"), stamps).where(
        F.col("cutoff_ts").isin([pd.Timestamp(c).to_pydatetime() for c in train_cutoffs])
    )
    scores = spark.createDataFrame(pd.DataFrame({
        "probability": model.predict_proba(test[inputs])[:, 1].astype(float), "label": test["churned"].astype(int),
        **{column: test[column].astype(object).where(test[column].notna(), None) for column in SLICES.values()},
    }))
    baseline = build_monitoring_baseline(training_rows, inputs, scores, threshold, slices=SLICES, min_slice_rows=min_slice_rows)
    row = (run.info.run_id, "ml/training_set", 0, len(train), len(test), threshold, pd.Timestamp.now(tz="UTC").to_pydatetime(), json.dumps(baseline))
    SparkDeltaDataset(filepath=BASELINES, write_mode="merge", merge_keys=["model_run_id"]).save(spark.createDataFrame(
        [row], "model_run_id string, training_set_path string, training_set_version bigint, train_rows bigint, "
        "test_rows bigint, threshold double, created_at timestamp, baseline string",
    ))
    return {"version": version, "run_id": run.info.run_id, "model": model, "inputs": inputs, "baseline": baseline}


def delete_model() -> None:
    """Remove the registered model (tests share one MLflow store)."""
    client = MlflowClient()
    if client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.delete_registered_model(MODEL_NAME)
