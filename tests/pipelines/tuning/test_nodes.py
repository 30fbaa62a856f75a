"""Tuning nodes on tiny frames: folds never look back, every family fits, studies reproduce and resume."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lakehouse_ml.modeling.folds import time_folds
from lakehouse_ml.modeling.guards import TrainingDataError
from lakehouse_ml.modeling.models import FAMILIES
from lakehouse_ml.pipelines.tuning.nodes import prepare_tuning, run_study
from lakehouse_ml.pipelines.tuning.pipeline import create_pipeline
from tests.helpers import working_directory

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH_SPACE = {
    "family": list(FAMILIES),
    "logistic_regression": {"C": {"low": 0.01, "high": 10.0, "log": True}},
    "hist_gradient_boosting": {"max_iter": {"low": 5, "high": 20}, "learning_rate": {"low": 0.05, "high": 0.3}},
    "random_forest": {"n_estimators": {"low": 5, "high": 15}, "max_depth": {"choices": [2, 3, None]}},
}


# ---------------------------------------------------------------- the study


def _synthetic(n_cutoffs: int = 6, per_cutoff: int = 40) -> pd.DataFrame:
    """A deterministic churn frame: churn grows with x, plan is noise, x has some nulls."""
    rng = np.random.default_rng(0)
    n = n_cutoffs * per_cutoff
    x = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i % per_cutoff}" for i in range(n)],
            "cutoff_ts": np.repeat(pd.date_range("2024-01-01", periods=n_cutoffs, freq="7D"), per_cutoff),
            "x": np.where(rng.random(n) < 0.1, np.nan, x),
            "plan": rng.choice(["basic", "premium"], size=n),
            "churned": (x + rng.normal(scale=0.8, size=n) > 0).astype(int),
        }
    )
    return frame


def _tuning(study_name: str, n_trials: int = 4, n_jobs: int = 1) -> dict:
    """Seeded tuning parameters."""
    return {"seed": 7, "n_trials": n_trials, "timeout_s": None, "n_jobs": n_jobs, "study_name": study_name}


def _storage(tmp_path) -> str:
    """A tmp SQLite storage."""
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _folds(frame: pd.DataFrame) -> list:
    """Two rolling-origin folds, the last cutoff held out."""
    return time_folds(frame["cutoff_ts"].tolist(), n_folds=2, test_cutoffs=1)[0]


def test_run_study_is_reproducible_with_the_same_seed(tmp_path):
    """Two studies with the same seed choose the same best params and value."""
    frame = _synthetic()
    first = run_study(frame, _folds(frame), SEARCH_SPACE, _tuning("a"), None, storage=_storage(tmp_path))
    second = run_study(frame, _folds(frame), SEARCH_SPACE, _tuning("b"), None, storage=_storage(tmp_path))
    assert first["best_params"] == second["best_params"]
    assert first["best_value"] == second["best_value"]
    assert first["n_trials"] == second["n_trials"] == 4
    assert first["best_params"]["family"] == first["best_family"] in FAMILIES and 0.5 < first["best_value"] <= 1
    assert set(first["best_model_params"]) == set(SEARCH_SPACE[first["best_family"]])


def test_parallel_trials_reproduce_every_trial_with_the_same_seed(tmp_path):
    """n_jobs=2: configurations are drawn in trial order outside the threads, so two runs agree on
    every trial's params, state and value, not only on the best one; pruning included."""
    frame = _synthetic()
    tuning = {"pruner": {"n_startup_trials": 2}}
    runs = [
        run_study(
            frame,
            _folds(frame),
            SEARCH_SPACE,
            {**_tuning(name, n_trials=8, n_jobs=2), **tuning},
            None,
            storage=_storage(tmp_path),
        )
        for name in ("parallel_a", "parallel_b")
    ]
    trials = [
        [
            (t.number, t.state.name, t.params, t.value)
            for t in optuna.load_study(study_name=name, storage=_storage(tmp_path)).trials
        ]
        for name in ("parallel_a", "parallel_b")
    ]
    assert trials[0] == trials[1] and len(trials[0]) == 8
    assert runs[0]["best_params"] == runs[1]["best_params"] and runs[0]["best_value"] == runs[1]["best_value"]
    assert {state for _, state, _, _ in trials[0]} <= {"COMPLETE", "PRUNED"}


def test_a_failing_configuration_ends_as_failed_and_the_study_goes_on(tmp_path):
    """A fold with one class makes ROC AUC undefined: those trials FAIL, the run does not."""
    frame = _synthetic()
    frame.loc[frame["cutoff_ts"] == sorted(frame["cutoff_ts"].unique())[0], "churned"] = 0
    single_class_first = [([sorted(frame["cutoff_ts"].unique())[0]], train_valid[1]) for train_valid in _folds(frame)]
    result = run_study(
        frame, single_class_first, SEARCH_SPACE, _tuning("failing", n_trials=2), None, storage=_storage(tmp_path)
    )
    assert result["trial_counts"]["fail"] == 2 and result["best_value"] is None and result["best_params"] == {}


def test_an_error_in_one_parallel_trial_fails_it_alone_and_stops_the_run(tmp_path, monkeypatch):
    """Not a configuration that cannot be scored but a raise (a bug, a lost store): the run stops,
    the trial that raised is FAIL, its batch neighbour keeps its real outcome, none stays RUNNING."""
    import threading

    from lakehouse_ml.pipelines.tuning import nodes

    real, calls, lock = nodes.fold_scores, [], threading.Lock()

    def third_fit_raises(train, folds, columns, family, params, seed):
        with lock:
            calls.append(family)
            raising = len(calls) == 3  # one of the second batch's two trials, whichever starts first
        if raising:
            raise RuntimeError("lost the store")
        return real(train, folds, columns, family, params, seed)

    monkeypatch.setattr(nodes, "fold_scores", third_fit_raises)
    frame = _synthetic()
    with pytest.raises(RuntimeError, match="lost the store"):
        run_study(
            frame,
            _folds(frame),
            SEARCH_SPACE,
            _tuning("raising", n_trials=8, n_jobs=2),
            None,
            storage=_storage(tmp_path),
        )
    trials = optuna.load_study(study_name="raising", storage=_storage(tmp_path)).trials
    states = sorted(t.state.name for t in trials)
    # The run stopped after the second batch: its raising trial FAIL alone, every other one finished.
    assert len(trials) == 4 and states.count("FAIL") == 1, states
    assert set(states) - {"FAIL"} <= {"COMPLETE", "PRUNED"}


def test_run_study_resumes_up_to_the_total_budget(tmp_path):
    """2 trials, then the same study with n_trials=4: 4 trials in the storage, not 6."""
    frame = _synthetic()
    first = run_study(
        frame, _folds(frame), SEARCH_SPACE, _tuning("resume", n_trials=2), None, storage=_storage(tmp_path)
    )
    second = run_study(
        frame, _folds(frame), SEARCH_SPACE, _tuning("resume", n_trials=4), None, storage=_storage(tmp_path)
    )
    assert (first["n_trials"], first["trials_this_run"]) == (2, 2)
    assert (second["n_trials"], second["trials_this_run"]) == (4, 2)
    stored = optuna.load_study(study_name="resume", storage=_storage(tmp_path))
    assert len(stored.trials) == 4


def stored_trials(storage: str, name: str) -> list[tuple]:
    """Number, state, params, value and fold reports of every stored trial of study ``name``."""
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values) for t in study.trials]


def test_a_resumed_study_draws_the_trials_an_uninterrupted_one_draws(tmp_path):
    """Stopped after 4 of 8 trials (between batches) and resumed by a fresh run: the same 8 trials,
    params, values and pruning, as 8 trials in one go; the TPE draws after the startup trials too."""
    frame, tuning = _synthetic(), {"pruner": {"n_startup_trials": 2}}
    storage = _storage(tmp_path)
    run_study(
        frame, _folds(frame), SEARCH_SPACE, {**_tuning("whole", n_trials=8, n_jobs=2), **tuning}, None, storage=storage
    )
    for n_trials in (4, 8):
        run_study(
            frame,
            _folds(frame),
            SEARCH_SPACE,
            {**_tuning("resumed", n_trials=n_trials, n_jobs=2), **tuning},
            None,
            storage=storage,
        )
    whole = stored_trials(storage, "whole")
    assert stored_trials(storage, "resumed") == whole and len(whole) == 8
    assert {state for _, state, *_ in whole} == {"COMPLETE", "PRUNED"}


def test_the_moved_storage_setting_is_refused_naming_the_catalog_entry(tmp_path):
    """`tuning.storage` is no longer read: a config still setting it fails before any trial."""
    frame = _synthetic()
    tuning = {**_tuning("moved"), "storage": _storage(tmp_path)}
    with pytest.raises(
        ValueError, match=r"tuning.storage: no longer read; the study storage is the catalog entry `optuna_storage`"
    ):
        run_study(frame, _folds(frame), SEARCH_SPACE, tuning, None)
    with pytest.raises(ValueError, match="tuning.storage: no longer read"):
        prepare_tuning(frame, {}, None, {"n_folds": 2, "test_cutoffs": 1, "storage": "sqlite:///x.db"})
    assert not (tmp_path / "optuna.db").exists()


def nested_trial_runs(tmp_path, n_jobs: int = 1, **study_args) -> list:
    """Run a 3-trial study under a parent run in a tmp MLflow store; check and return its child runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with working_directory(tmp_path):
        client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("tuning-test")
    parent = client.create_run(experiment).info.run_id
    frame = _synthetic()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        result = run_study(
            frame,
            _folds(frame),
            SEARCH_SPACE,
            _tuning("nested", n_trials=3, n_jobs=n_jobs),
            parent,
            storage=_storage(tmp_path),
            **study_args,
        )
    finally:
        mlflow.set_tracking_uri(previous)
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == result["n_trials"] == 3
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["optuna.state"] == "COMPLETE"
        assert {"fold_0_roc_auc", "fold_1_roc_auc", "mean_roc_auc", "duration_s"} <= set(child.data.metrics)
        assert child.data.params["family"] in FAMILIES
    return children


def test_each_trial_is_a_nested_mlflow_run_with_metrics(tmp_path):
    """With a parent run, every trial is a child run carrying the parent id, its params and metrics."""
    nested_trial_runs(tmp_path)


CONTRACT = {
    "entity_keys": ["customer_id"],
    "timestamp_key": "feature_ts",
    "ingested_at_key": "ingested_at",
    "grain": "g",
    "refresh": "daily",
    "owner": "o",
    "description": "d",
    "time_semantics": "event_time",
    "source": "s",
    "kind": "changes",
    "features": {
        "x": {"unit": "EUR", "freshness": "2 days", "null_policy": {"impute": 0}, "compute": {"column": "a"}},
        "plan": {"unit": "category", "freshness": "2 days", "null_policy": "keep", "compute": {"column": "a"}},
    },
}
SPLIT = {"n_folds": 2, "test_cutoffs": 2, "gap_cutoffs": 1}
FEATURE_TABLES = {"customer_activity": CONTRACT, "customer_profile": {**CONTRACT, "enabled": False}}


def test_prepare_tuning_holds_out_the_test_window():
    """The tuning rows hold no test cutoff; folds cover only the tuning cutoffs."""
    frame = _synthetic(n_cutoffs=8).drop(columns="plan")
    train, folds, test, columns = prepare_tuning(
        frame.rename(columns={"x": "customer_activity__x"}),
        FEATURE_TABLES,
        None,
        SPLIT,
    )
    assert len(test) == 2 and not train["cutoff_ts"].isin(test).any()
    assert columns == {
        "numeric": ["customer_activity__x"],
        "categorical": [],
        "imputation": {"customer_activity__x": 0},
    }
    assert all(max(t) < min(v) for t, v in folds)


def _with_activity_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"x": "customer_activity__x", "plan": "customer_activity__plan"})


def test_prepare_tuning_fails_on_a_feature_null_in_every_training_row():
    """All-null in the tuning rows fails even when the test window has values: the model never sees one."""
    frame = _with_activity_columns(_synthetic(n_cutoffs=8))
    test = frame["cutoff_ts"] >= sorted(frame["cutoff_ts"].unique())[-2]
    frame.loc[~test, "customer_activity__x"] = np.nan
    with pytest.raises(TrainingDataError) as raised:
        prepare_tuning(frame, FEATURE_TABLES, None, {**SPLIT, "guards": {"constant_features": "leave_out"}})
    message = str(raised.value)
    assert message.startswith(
        "tuning: 1 feature(s) are NULL in every one of the 240 training rows (cutoffs 2024-01-01..2024-02-05)"
    )
    assert "customer_activity__x" in message and "training_set.guards.min_matched_share" in message


def test_prepare_tuning_leaves_a_constant_feature_out_saying_so_or_fails_when_told_to(caplog):
    frame = _with_activity_columns(_synthetic(n_cutoffs=8)).assign(customer_activity__plan="basic")
    _, _, _, columns = prepare_tuning(frame, FEATURE_TABLES, None, SPLIT)
    assert columns["categorical"] == [] and columns["numeric"] == ["customer_activity__x"]
    assert columns["left_out"] == {"customer_activity__plan": "one value in every training row: 'basic'"}
    assert (
        "1 feature(s) hold one value in every training row and are left out of the model: customer_activity__plan = 'basic'"
        in caplog.text
    )
    failing = {**SPLIT, "guards": {"constant_features": "fail"}}
    with pytest.raises(
        TrainingDataError, match=r"1 feature\(s\) hold one value in every one of the 240 training rows"
    ) as raised:
        prepare_tuning(frame, FEATURE_TABLES, None, failing)
    assert "customer_activity__plan = 'basic'" in str(raised.value)
    with pytest.raises(ValueError, match="tuning.guards.constant_features: expected leave_out or fail, got 'drop'"):
        prepare_tuning(frame, FEATURE_TABLES, None, {**SPLIT, "guards": {"constant_features": "drop"}})


def test_pipeline_wires_training_set_and_params():
    """The pipeline reads the pandas training set and the tuning params and outputs the study result."""
    pipeline = create_pipeline()
    assert {
        "training_set@pandas",
        "params:feature_tables",
        "params:on_demand_features",
        "params:tuning",
        "optuna_storage",
    } <= pipeline.inputs()
    assert pipeline.outputs() == {"tuning_study_result", "tuning_test_cutoffs"}


def test_a_running_trial_counts_toward_the_budget_until_it_is_stale():
    """A RUNNING trial holds its slot while its process may be alive; past stale_trial_after_s (or
    never, when null) it is a dead process's and frees the slot; finished trials always hold one."""
    from datetime import datetime, timedelta

    from lakehouse_ml.pipelines.tuning.nodes import _holds_budget

    def trial(state, age_s):
        return optuna.trial.FrozenTrial(
            number=0,
            state=state,
            value=None,
            datetime_start=datetime.now() - timedelta(seconds=age_s),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=0,
        )

    running = optuna.trial.TrialState.RUNNING
    assert _holds_budget(trial(running, 10), 3600) and _holds_budget(trial(running, 7200), None)
    assert not _holds_budget(trial(running, 7200), 3600)
    assert _holds_budget(trial(optuna.trial.TrialState.PRUNED, 7200), 3600)
    assert not _holds_budget(trial(optuna.trial.TrialState.FAIL, 10), 3600)
