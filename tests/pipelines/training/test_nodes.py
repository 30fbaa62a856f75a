"""Training nodes on a small hand-made training set: the refit window respects the gap, the
threshold comes from validation folds only, the test window is scored once, outputs are complete."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lakehouse_ml.pipelines.training.nodes import (
    SPEC_PROPERTY,
    _signature,
    choose_operating_threshold,
    evaluate_candidate,
    log_candidate,
    plan_candidate,
    refit_candidate,
)
from tests.helpers import project_config, small_training_set

CUTOFFS = list(pd.date_range("2026-01-05", periods=8, freq="7D", tz="UTC"))
TUNING = {"seed": 7, "n_folds": 2, "test_cutoffs": 2, "gap_cutoffs": 1}
TRAINING = {
    "operating_threshold": {"name": "max_f1"},
    "slices": {"country": "customer_profile__country", "tenure_bucket": {"column": "tenure_days", "edges": [0, 100]}},
    "min_slice_rows": 20,
    "importance": {"max_rows": 200, "n_repeats": 1},
    "input_example_rows": 3,
}
STUDY = {
    "study_name": "s",
    "best_trial": 3,
    "best_value": 0.8,
    "best_family": "logistic_regression",
    "best_model_params": {"C": 1.0},
    "best_params": {"family": "logistic_regression", "logistic_regression__C": 1.0},
    "n_trials": 4,
    "trial_counts": {"complete": 3, "pruned": 1},
    "trials": [
        {"number": i, "state": "COMPLETE", "family": "logistic_regression", "value": 0.7 + i / 100, "duration_s": 1.0}
        for i in range(4)
    ],
}


ON_DEMAND = project_config()["parameters"]["on_demand_features"]


@pytest.fixture(scope="module")
def contracts():
    params = project_config()["parameters"]
    return params["feature_tables"]


def _iso(indices):
    return [CUTOFFS[i].isoformat() for i in indices]


def test_plan_splits_folds_test_and_a_refit_window_that_ends_a_gap_before_test(contracts):
    """8 cutoffs, 2 test, 2 folds, gap 1: tuning c0..c5 in blocks of (6 - 1) // 3 = 1;
    fold 0 trains c0..c2 (c3 is the gap) and validates c4, fold 1 trains c0..c3 and validates c5;
    the refit window is c0..c4 (c5 is the gap before the test window c6, c7)."""
    plan = plan_candidate(small_training_set(CUTOFFS), STUDY, contracts, ON_DEMAND, TUNING)
    assert plan["test_cutoffs"] == _iso([6, 7])
    assert plan["folds"] == [(_iso([0, 1, 2]), _iso([4])), (_iso([0, 1, 2, 3]), _iso([5]))]
    assert plan["train_cutoffs"] == _iso([0, 1, 2, 3, 4])
    assert plan["columns"]["numeric"] == ["customer_activity__orders_30d", "tenure_days"]
    assert plan["columns"]["categorical"] == ["customer_profile__plan_tier", "customer_profile__country"]
    assert plan["columns"]["imputation"]["customer_activity__orders_30d"] == 0
    assert (plan["family"], plan["model_params"], plan["seed"]) == ("logistic_regression", {"C": 1.0}, 7)


def test_plan_refuses_a_study_without_a_completed_trial(contracts):
    failed = {**STUDY, "best_family": None, "trial_counts": {"fail": 2}}
    with pytest.raises(ValueError, match="no completed trial.*run the tuning pipeline first"):
        plan_candidate(small_training_set(CUTOFFS), failed, contracts, ON_DEMAND, TUNING)


def test_threshold_is_chosen_on_validation_folds_only(contracts):
    """The validation rows are those of c4 and c5; relabelling the test window changes nothing."""
    frame = small_training_set(CUTOFFS)
    plan = plan_candidate(frame, STUDY, contracts, ON_DEMAND, TUNING)
    chosen = choose_operating_threshold(frame, plan, TRAINING)
    assert chosen["validation_rows"] == 120 and chosen["strategy"] == "max_f1"
    flipped = frame.copy()
    test = flipped["cutoff_ts"].isin(CUTOFFS[6:])
    flipped.loc[test, "churned"] = 1 - flipped.loc[test, "churned"]
    assert choose_operating_threshold(flipped, plan, TRAINING) == chosen


def test_refit_uses_the_refit_window_only_and_ignores_row_order(contracts):
    frame = small_training_set(CUTOFFS)
    plan = plan_candidate(frame, STUDY, contracts, ON_DEMAND, TUNING)
    fit = refit_candidate(frame, plan, TRAINING)
    assert fit["train_rows"] == 5 * 60
    assert list(fit["input_example"].columns) == plan["columns"]["numeric"] + plan["columns"]["categorical"]
    assert len(fit["input_example"]) == 3
    reordered = refit_candidate(frame.iloc[::-1].reset_index(drop=True), plan, TRAINING)
    probe = frame.head(20)[list(fit["input_example"].columns)]
    assert np.array_equal(fit["model"].predict_proba(probe), reordered["model"].predict_proba(probe))


def test_numeric_inputs_are_doubles_in_the_signature_even_without_nulls(contracts):
    """A feature with no null arrives as integers; serving sends doubles and nulls, so the signature says double."""
    frame = small_training_set(CUTOFFS)
    plan = plan_candidate(frame, STUDY, contracts, ON_DEMAND, TUNING)
    column = plan["columns"]["numeric"][0]
    frame[column] = frame[column].fillna(0).round().astype("int64")
    fit = refit_candidate(frame, plan, TRAINING)
    inputs = {spec.name: spec.type.name for spec in _signature(fit).inputs.inputs}
    assert inputs[column] == "double"
    assert {inputs[c] for c in plan["columns"]["numeric"]} == {"double"}


def test_evaluation_scores_the_test_window_with_slices(contracts):
    frame = small_training_set(CUTOFFS)
    plan = plan_candidate(frame, STUDY, contracts, ON_DEMAND, TUNING)
    threshold = choose_operating_threshold(frame, plan, TRAINING)
    scores, evaluation = evaluate_candidate(refit_candidate(frame, plan, TRAINING), frame, plan, threshold, TRAINING)
    assert len(scores) == 120 and set(scores["cutoff_ts"]) == set(CUTOFFS[6:])
    assert set(scores["tenure_bucket"]) <= {"0_100", "100_plus"} and set(scores["country"]) == {"DE", "FR"}
    assert evaluation["metrics"]["rows"] == 120 and evaluation["metrics"]["threshold"] == threshold["threshold"]
    assert sum(evaluation["confusion"].values()) == 120
    assert set(evaluation["slices"]) == {"country", "tenure_bucket"}
    assert set(evaluation["importance"]) == set(plan["columns"]["numeric"] + plan["columns"]["categorical"])
    # Orders drive churn here: shuffling them costs the most ROC AUC.
    ranked = sorted(evaluation["importance"], key=lambda name: evaluation["importance"][name]["mean"])
    assert ranked[-1] == "customer_activity__orders_30d"


def test_log_candidate_returns_every_output(contracts):
    frame = small_training_set(CUTOFFS)
    plan = plan_candidate(frame, STUDY, contracts, ON_DEMAND, TUNING)
    threshold = choose_operating_threshold(frame, plan, TRAINING)
    fit = refit_candidate(frame, plan, TRAINING)
    scores, evaluation = evaluate_candidate(fit, frame, plan, threshold, TRAINING)
    spec = {"sources": {"customer_activity": {"version": 3, "contract_hash": "abc"}}}
    info = {"path": "/lake/dev/ml/training_set", "version": 5, "properties": {SPEC_PROPERTY: json.dumps(spec)}}
    outputs = log_candidate(fit, plan, threshold, scores, evaluation, STUDY, info, TRAINING)

    assert set(outputs) == {
        "model",
        "metrics",
        "roc_plot",
        "pr_plot",
        "calibration_plot",
        "confusion_matrix_plot",
        "feature_importance_plot",
        "optuna_history",
        "slice_metrics",
        "provenance",
        "pointer",
    }
    assert all(isinstance(outputs[k], Figure) for k in outputs if k.endswith("_plot") or k == "optuna_history")
    assert outputs["model"]["model"] is fit["model"]
    assert outputs["model"]["signature"].inputs.input_names() == list(fit["input_example"].columns)
    metrics = outputs["metrics"]
    assert metrics["roc_auc"] == {"value": evaluation["metrics"]["roc_auc"], "step": 0}
    assert metrics["validation_roc_auc"]["value"] == 0.8 and metrics["train_rows"]["value"] == 300
    assert any(name.startswith("roc_auc__country_") for name in metrics)
    assert outputs["provenance"]["training_set"] == {"path": info["path"], "version": 5, "spec": spec}
    assert outputs["pointer"]["training_set"] == {"path": info["path"], "version": 5}
    assert outputs["pointer"]["split"]["test_cutoffs"] == _iso([6, 7])
    json.dumps(outputs["provenance"]), json.dumps(outputs["pointer"]), json.dumps(outputs["slice_metrics"])
