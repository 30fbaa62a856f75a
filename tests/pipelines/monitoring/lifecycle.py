"""Test helper for monitoring: a registered version's monitoring baseline, written by the evaluation
pipeline's own node (versions are registered with ``tests.helpers.register_version``)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from deltalake import DeltaTable
from kedro.io import DataCatalog

from lakehouse_ml.pipelines.evaluation.nodes import profile_monitoring_baseline
from tests.helpers import merged_parameters, project_config

TRAINING_SET = "data/lakehouse/dev/ml/training_set"


def write_baseline(
    spark,
    registered: dict[str, Any],
    training_set: pd.DataFrame,
    train_cutoffs,
    test_cutoffs,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The version's monitoring baseline, built by the evaluation node and saved through the catalog
    (training rows = ``train_cutoffs``, test scores = its scores on ``test_cutoffs``); returns it."""
    params = params or merged_parameters()
    test = training_set[training_set["cutoff_ts"].isin(list(test_cutoffs))]
    scores = test[["customer_id", "cutoff_ts", "churned"]].assign(
        candidate_score=registered["model"].predict_proba(test[registered["inputs"]])[:, 1]
    )
    candidate = {
        "run_id": registered["run_id"],
        "input_columns": registered["inputs"],
        "pointer": {
            "split": {"train_cutoffs": [str(c) for c in train_cutoffs], "test_cutoffs": [str(c) for c in test_cutoffs]}
        },
    }
    context = {
        "candidate": {"threshold": registered["threshold"]},
        "training_set": {"path": TRAINING_SET, "version": DeltaTable(TRAINING_SET).version()},
    }
    row = profile_monitoring_baseline(
        candidate,
        spark.read.format("delta").load(TRAINING_SET),
        scores,
        context,
        params["feature_tables"],
        params["monitoring"],
        params["training"],
    )
    DataCatalog.from_config(project_config()["catalog"]).save("monitoring_baselines@write", row)
    return json.loads(row.collect()[0]["baseline"])
