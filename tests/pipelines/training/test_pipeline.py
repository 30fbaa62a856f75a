"""tuning + training in a real Kedro session (project hooks, kedro-mlflow) on a small simulated
business: the MLflow run tree, the candidate run's model, metrics and artifacts, and
reproducibility of the best trial and the test metrics for a fixed seed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from deltalake import DeltaTable
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow import MlflowClient

from lakehouse_ml.pipelines.features.pipeline import create_pipeline as features_pipeline
from lakehouse_ml.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from lakehouse_ml.pipelines.simulate.pipeline import create_pipeline as simulate_pipeline
from lakehouse_ml.pipelines.training.pipeline import create_pipeline as training_pipeline
from lakehouse_ml.pipelines.training_set.pipeline import create_pipeline as training_set_pipeline
from lakehouse_ml.pipelines.tuning.pipeline import create_pipeline as tuning_pipeline
from tests.helpers import PROJECT_ROOT, run_pipeline

N_TRIALS = 5
LAKE_PARAMS = {
    "simulate": {"n_customers": 500, "n_days": 90},
    "ingest": {"quarantine_gate": {"max_rate": 0.2, "min_rows": 50}},
    "training_set": {"spine": {"warmup_days": 20, "every_days": 5, "horizon_days": 14, "active_lookback_days": 30}},
}
# 12 cutoffs (days 20..75): 2 test cutoffs, 2 folds, a 3-cutoff gap (15 days > 14-day horizon).
RUN_PARAMS = {
    "tuning": {
        "n_folds": 2,
        "test_cutoffs": 2,
        "gap_cutoffs": 3,
        "n_trials": N_TRIALS,
        "n_jobs": 1,
        "pruner": {"n_startup_trials": 2},
        "search_space": {
            "random_forest": {"n_estimators": {"low": 10, "high": 30}},
            "hist_gradient_boosting": {"max_leaf_nodes": {"low": 4, "high": 16}},
        },
    },
    "training": {"min_slice_rows": 30, "importance": {"max_rows": 800, "n_repeats": 1}},
}
CANDIDATE_ARTIFACTS = {
    "plots/roc.png",
    "plots/pr.png",
    "plots/calibration.png",
    "plots/confusion_matrix.png",
    "plots/feature_importance.png",
    "reports/slice_metrics.json",
    "reports/optuna_history.png",
    "reports/provenance.json",
}


def _run_session(project: Path, study_name: str) -> str:
    """`kedro run --pipelines tuning,training` in-process; returns kedro-mlflow's parent run id."""
    params = {**RUN_PARAMS, "tuning": {**RUN_PARAMS["tuning"], "study_name": study_name}}
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["tuning", "training"])
    assert mlflow.active_run() is None  # the session closed every run it opened (no leak into the next one)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("lakehouse_ml_dev")
    parents = [
        run
        for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
        if "mlflow.parentRunId" not in run.data.tags
    ]
    return parents[0].info.run_id


@pytest.fixture(scope="module")
def project(tmp_path_factory, spark):
    """A project copy with a small lakehouse up to the training set, and two seeded sessions."""
    root = tmp_path_factory.mktemp("training_project")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("credentials*"))
    (root / "src").mkdir()  # kedro checks the folder exists; the package itself is installed
    cwd, previous_uri = Path.cwd(), mlflow.get_tracking_uri()
    saved = {k: os.environ.get(k) for k in ("LAKEHOUSE_ML_ROOT", "KEDRO_DISABLE_TELEMETRY", "MLFLOW_TRACKING_URI")}
    os.environ.update(LAKEHOUSE_ML_ROOT=str(root), KEDRO_DISABLE_TELEMETRY="1")
    os.environ.pop("MLFLOW_TRACKING_URI")  # the project's mlflow.yml decides, as in a real run
    os.chdir(root)
    try:
        run_pipeline(
            simulate_pipeline() + ingest_pipeline() + features_pipeline() + training_set_pipeline(),
            runtime_params=LAKE_PARAMS,
        )
        first = _run_session(root, "seeded_a")
        second = _run_session(root, "seeded_b")
        yield {"root": root, "runs": (first, second), "client": MlflowClient()}
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous_uri)
        # kedro-mlflow made the copy's experiment the active one; its id means nothing in the
        # store later tests log to.
        mlflow.set_experiment("Default")


def _children(client: MlflowClient, parent_id: str) -> dict[str, mlflow.entities.Run]:
    experiment_id = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000
    )
    return {run.info.run_name: run for run in runs}


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_run_tree_parent_child_per_node_grandchild_per_trial(project):
    client, (parent_id, _) = project["client"], project["runs"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert "environment.json" in _artifacts(client, parent_id)

    children = _children(client, parent_id)
    expected_nodes = {n.name for n in (tuning_pipeline() + training_pipeline()).nodes}
    assert set(children) == expected_nodes
    for name, child in children.items():
        assert child.info.status == "FINISHED", name
        assert child.data.tags["node"] == name and child.data.tags["env"] == "local"
        assert child.data.tags["pipeline"] == "tuning+training"
        assert child.data.tags["git_sha"] and child.data.tags["run_type"] == "pipeline"
        assert child.data.metrics["duration_s"] >= 0

    trials = _children(client, children["tuning.tune"].info.run_id)
    assert len(trials) == N_TRIALS
    for trial in trials.values():
        state = trial.data.tags["optuna.state"]
        assert state in {"COMPLETE", "PRUNED"}
        assert trial.data.params["family"] in {"logistic_regression", "hist_gradient_boosting", "random_forest"}
        assert "fold_0_roc_auc" in trial.data.metrics and "duration_s" in trial.data.metrics
        assert ("mean_roc_auc" in trial.data.metrics) == (state == "COMPLETE")
    # No trial run hangs under any other node (Optuna threads must not lose their parent).
    for name, child in children.items():
        if name != "tuning.tune":
            assert not _children(client, child.info.run_id), name


def test_delta_inputs_are_recorded_with_their_versions(project):
    client, (parent_id, _) = project["client"], project["runs"]
    version = DeltaTable(str(project["root"] / "data/lakehouse/dev/ml/training_set")).version()
    children = _children(client, parent_id)
    for name in (
        "tuning.prepare_tuning",
        "training.plan_candidate",
        "training.refit_candidate",
        "training.log_candidate",
    ):
        inputs = children[name].inputs.dataset_inputs
        tables = {i.dataset.name: json.loads(i.dataset.source)["delta_table_version"] for i in inputs}
        assert tables == {"dev.ml.training_set": version}, (name, tables)


def test_candidate_run_holds_model_metrics_and_artifacts(project):
    client, root = project["client"], project["root"]
    pointer = json.loads((root / "data/06_models/dev/candidate.json").read_text())
    candidate = client.get_run(pointer["run_id"])
    assert candidate.data.tags["mlflow.runName"] == "training.log_candidate"
    assert candidate.data.tags["mlflow.parentRunId"] == project["runs"][1]  # the latest session wrote the pointer

    assert _artifacts(client, candidate.info.run_id) >= CANDIDATE_ARTIFACTS
    for name in CANDIDATE_ARTIFACTS:
        assert (root / "data/08_reporting/dev/candidate" / name).stat().st_size > 0

    metrics = candidate.data.metrics
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "calibration_error", "precision", "recall", "threshold"):
        assert name in metrics, name
    assert 0.5 < metrics["roc_auc"] <= 1.0 and 0.0 <= metrics["calibration_error"] <= 1.0
    slices = json.loads((root / "data/08_reporting/dev/candidate/reports/slice_metrics.json").read_text())
    assert set(slices) == {"country", "plan_tier", "tenure_bucket"}
    measured = [(s, v) for s, values in slices.items() for v, entry in values.items() if "metrics" in entry]
    assert measured
    for slice_name, value in measured:
        assert metrics[f"roc_auc__{slice_name}_{value}"] == slices[slice_name][value]["metrics"]["roc_auc"]
    assert not any("=" in name for name in metrics)

    provenance = json.loads((root / "data/08_reporting/dev/candidate/reports/provenance.json").read_text())
    version = DeltaTable(str(root / "data/lakehouse/dev/ml/training_set")).version()
    assert provenance["training_set"]["version"] == version
    assert set(provenance["training_set"]["spec"]["sources"]) >= {"customer_activity", "customer_profile"}
    assert provenance["split"]["train_cutoffs"][-1] < provenance["split"]["test_cutoffs"][0]
    assert provenance["operating_threshold"]["threshold"] == pytest.approx(metrics["threshold"])


def test_logged_model_loads_with_signature_and_scores_probabilities(project):
    pointer = json.loads((project["root"] / "data/06_models/dev/candidate.json").read_text())
    model = mlflow.pyfunc.load_model(pointer["model_uri"])
    signature = model.metadata.get_input_schema()
    provenance = json.loads((project["root"] / "data/08_reporting/dev/candidate/reports/provenance.json").read_text())
    features = provenance["features"]["numeric"] + provenance["features"]["categorical"]
    assert signature.input_names() == features
    example = mlflow.models.Model.load(pointer["model_uri"]).load_input_example()
    assert list(example.columns) == features
    scores = np.asarray(model.predict(example))
    assert scores.shape == (len(example), 2)
    assert np.allclose(scores.sum(axis=1), 1.0) and ((scores >= 0) & (scores <= 1)).all()


def test_same_seed_same_tables_reproduce_best_trial_and_test_metrics(project):
    client, (first, second) = project["client"], project["runs"]
    results = []
    for parent_id in (first, second):
        children = _children(client, parent_id)
        candidate = children["training.log_candidate"]
        best = mlflow.artifacts.load_dict(f"runs:/{candidate.info.run_id}/reports/provenance.json")
        results.append((best["study"]["best_params"], best["study"]["best_value"], candidate.data.metrics))
    (params_a, value_a, metrics_a), (params_b, value_b, metrics_b) = results
    assert params_a == params_b and value_a == value_b
    metrics_a.pop("duration_s", None), metrics_b.pop("duration_s", None)
    assert metrics_a == metrics_b
