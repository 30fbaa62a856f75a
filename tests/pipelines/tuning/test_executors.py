"""Trials as Spark tasks (``tuning.executor: spark``) give exactly the trials local threads give.

Run on the engine under test: the embedded engine runs ``mapInPandas`` in its own process;
``tests/cluster`` runs this file again against the local cluster, where each trial is a task on
an executor.
"""

from __future__ import annotations

import optuna
import pytest

from lakehouse_ml.capabilities import python_runs_on_executors
from lakehouse_ml.pipelines.tuning.executors import batch_fitter
from lakehouse_ml.pipelines.tuning.nodes import run_study
from tests.pipelines.tuning.test_nodes import SEARCH_SPACE, _folds, _storage, _synthetic, _tuning, nested_trial_runs

optuna.logging.set_verbosity(optuna.logging.WARNING)


def trials(tmp_path, name: str) -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=_storage(tmp_path))
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values) for t in study.trials]


def test_spark_tasks_give_the_trials_local_threads_give_pruning_included(spark, tmp_path):
    frame = _synthetic()
    folds = _folds(frame)
    columns = {"numeric": ["x"], "categorical": ["plan"], "imputation": {}}
    tuning = {"pruner": {"n_startup_trials": 2}}
    for name, executor in (("threads", "threads"), ("spark", "spark")):
        fit_batch = batch_fitter(executor, frame, folds, columns, 7)
        assert (fit_batch is None) is (executor == "threads")
        run_study(
            frame,
            folds,
            SEARCH_SPACE,
            {**_tuning(name, n_trials=8, n_jobs=2), **tuning},
            None,
            columns,
            fit_batch,
            _storage(tmp_path),
        )
    local, on_spark = trials(tmp_path, "threads"), trials(tmp_path, "spark")
    assert on_spark == local and len(local) == 8
    assert {state for _, state, *_ in local} == {"COMPLETE", "PRUNED"}  # the replay pruned as the threads did


def test_a_configuration_that_fails_in_a_task_ends_as_failed_and_the_study_goes_on(spark, tmp_path):
    frame = _synthetic()
    first = sorted(frame["cutoff_ts"].unique())[0]
    frame.loc[frame["cutoff_ts"] == first, "churned"] = 0
    folds = [([first], valid) for _, valid in _folds(frame)]
    columns = {"numeric": ["x"], "categorical": ["plan"], "imputation": {}}
    fit_batch = batch_fitter("spark", frame, folds, columns, 7)
    result = run_study(
        frame,
        folds,
        SEARCH_SPACE,
        _tuning("failing", n_trials=2, n_jobs=2),
        None,
        columns,
        fit_batch,
        _storage(tmp_path),
    )
    assert result["trial_counts"]["fail"] == 2 and result["best_value"] is None


def test_each_trial_fitted_by_a_task_is_a_nested_mlflow_run_with_its_fold_metrics(spark, tmp_path):
    frame = _synthetic()
    columns = {"numeric": ["x"], "categorical": ["plan"], "imputation": {}}
    fit_batch = batch_fitter("spark", frame, _folds(frame), columns, 7)
    children = nested_trial_runs(tmp_path, n_jobs=2, columns=columns, fit_batch=fit_batch)
    assert all(child.data.metrics["duration_s"] > 0 for child in children)


def test_auto_fits_on_executors_only_where_the_engine_runs_python_there(spark):
    frame = _synthetic()
    fit_batch = batch_fitter("auto", frame, _folds(frame), {"numeric": ["x"], "categorical": [], "imputation": {}}, 7)
    assert (fit_batch is not None) is python_runs_on_executors(spark)


def test_an_unknown_executor_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"tuning.executor: expected one of auto, threads, spark, got 'gpu'"):
        batch_fitter("gpu", _synthetic(), [], {}, 7)
