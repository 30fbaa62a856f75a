"""The evaluation pipeline on the real catalog with real MLflow models and registry (tmp store):
a good first candidate passes every gate; each gate can be made to fail; the training set must be
the version the candidate was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from lakehouse_ml.datasets import ModelRegistryDataset, PandasDeltaDataset
from lakehouse_ml.modeling.models import build_model_pipeline
from lakehouse_ml.pipelines.evaluation.pipeline import create_pipeline
from lakehouse_ml.pipelines.registration.pipeline import create_pipeline as registration_pipeline
from tests.helpers import run_pipeline, small_training_set

CUTOFFS = list(pd.date_range("2026-01-05", periods=6, freq="7D", tz="UTC"))
TEST_CUTOFFS = CUTOFFS[4:]
NUMERIC = ["customer_activity__orders_30d", "tenure_days"]
CATEGORICAL = ["customer_profile__country", "customer_profile__plan_tier"]
MODEL_NAME = "dev.ml.churn_classifier"
# Loose limits the small synthetic data passes; each test tightens one gate.
PASSABLE = {
    "evaluation": {
        "floors": {"roc_auc": 0.6, "pr_auc": 0.3},
        "ceilings": {"log_loss": 0.7, "calibration_error": 0.2},
        "slices": {"floors": {"roc_auc": 0.55}, "max_drop_vs_champion": {"roc_auc": 0.05}},
        "serving": {"latency_budget_ms": {"single_row": 2000, "batch_100": 2000}, "latency_repeats": 3},
    },
    "training": {"min_slice_rows": 40},
}


def _log_model(model, frame: pd.DataFrame, columns: list[str]) -> str:
    """Fit, log with signature and predict_proba as serving does, and the provenance report the
    registration reads; returns the run id."""
    model.fit(frame[columns], frame["churned"])
    example = frame[columns].head(3)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict_proba(example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            serialization_format="cloudpickle",
        )
        mlflow.log_dict(
            {"training_set": {"spec": {"sources": {}}}, "model": {"estimator": repr(model), "columns": columns}},
            "reports/provenance.json",
        )
    return run.info.run_id


def _pipeline_model(numeric=NUMERIC, categorical=CATEGORICAL):
    return build_model_pipeline("logistic_regression", {}, numeric, categorical, {"customer_activity__orders_30d": 0})


@pytest.fixture
def lake(tmp_path, monkeypatch, spark):
    """A small training set at data/lakehouse/dev/ml/training_set and a candidate pointer to a logged model."""
    monkeypatch.chdir(tmp_path)
    frame = small_training_set(CUTOFFS, per_cutoff=150)
    table = tmp_path / "data/lakehouse/dev/ml/training_set"
    write_deltalake(str(table), frame)
    train = frame[~frame["cutoff_ts"].isin(TEST_CUTOFFS)]

    def candidate(model=None, columns=NUMERIC + CATEGORICAL, version=0) -> str:
        run_id = _log_model(model or _pipeline_model(), train, columns)
        pointer = {
            "run_id": run_id,
            "model_uri": f"runs:/{run_id}/model",
            "operating_threshold": {"threshold": 0.3},
            "training_set": {"path": str(table), "version": version},
            "split": {
                "train_cutoffs": [c.isoformat() for c in CUTOFFS[:4]],
                "test_cutoffs": [c.isoformat() for c in TEST_CUTOFFS],
            },
            "git_sha": "test",
        }
        path = tmp_path / "data/06_models/dev/candidate.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pointer))
        return run_id

    def champion(model=None, columns=NUMERIC + CATEGORICAL) -> str:
        run_id = _log_model(model or _pipeline_model(), train, columns)
        client = MlflowClient()
        version = mlflow.register_model(f"runs:/{run_id}/model", MODEL_NAME).version
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
        client.set_model_version_tag(MODEL_NAME, version, "operating_threshold", "0.3")
        return version

    yield {"root": tmp_path, "candidate": candidate, "champion": champion, "frame": frame}
    client = MlflowClient()
    if client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.delete_registered_model(MODEL_NAME)


def _evaluate(root: Path, **overrides) -> dict:
    params = json.loads(json.dumps(PASSABLE))
    for key, value in overrides.items():
        section, *path = key.split(".")
        target = params.setdefault(section, {})
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    run_pipeline(create_pipeline(), runtime_params=params)
    return json.loads((root / "data/08_reporting/dev/evaluation/gates.json").read_text())


def _verdicts(report: dict) -> dict[str, bool]:
    return {gate["name"]: gate["passed"] for gate in report["gates"]}


def test_a_good_first_candidate_passes_every_gate(lake):
    run_id = lake["candidate"]()
    report = _evaluate(lake["root"])
    assert report["passed"] and report["summary"] == "6/6 gates passed", report["summary"]
    assert _verdicts(report) == dict.fromkeys(
        ["absolute_limits", "slices", "champion_comparison", "signature", "smoke_test", "latency"], True
    )
    assert report["champion"] is None and report["candidate"]["run_id"] == run_id
    assert report["training_set"]["version"] == 0
    assert report["test_cutoffs"] == [c.isoformat() for c in TEST_CUTOFFS]
    overall = report["metrics"]["candidate"]["overall"]
    assert overall["rows"] == 300 and overall["threshold"] == 0.3
    smoke = next(g for g in report["gates"] if g["name"] == "smoke_test")
    assert {c["subject"] for c in smoke["checks"]} == {
        "sample_rows",
        "single_row",
        "all_null",
        "zeros",
        "extreme_values",
    }

    # The candidate's monitoring baseline: profiles of every input on its training rows, its test-window
    # scores at its threshold, and the reference performance (histogram AUC within a bin's width of sklearn's).
    stored = PandasDeltaDataset(filepath=str(lake["root"] / "data/lakehouse/dev/monitoring/baselines")).load()
    assert list(stored["model_run_id"]) == [run_id] and list(stored["test_rows"]) == [300]
    baseline = json.loads(stored["baseline"].iloc[0])
    assert sorted(baseline["features"]) == sorted(NUMERIC + CATEGORICAL)
    train_rows = len(lake["frame"]) - 300
    assert {p["count"] for p in baseline["features"].values()} == {train_rows} and list(stored["train_rows"]) == [
        train_rows
    ]
    assert baseline["scores"]["threshold"] == 0.3 and baseline["scores"]["profile"]["count"] == 300
    assert baseline["reference"]["roc_auc"]["value"] == pytest.approx(overall["roc_auc"], abs=2e-3)


@pytest.mark.parametrize(
    ("override", "failing"),
    [
        ({"evaluation.floors": {"roc_auc": 0.999}}, "absolute_limits"),
        ({"evaluation.ceilings": {"log_loss": 0.01}}, "absolute_limits"),
        ({"evaluation.slices.floors": {"roc_auc": 0.999}}, "slices"),
        ({"evaluation.serving.latency_budget_ms": {"single_row": 0.0001}}, "latency"),
    ],
)
def test_each_policy_gate_fails_alone(lake, override, failing):
    lake["candidate"]()
    report = _evaluate(lake["root"], **override)
    verdicts = _verdicts(report)
    assert not report["passed"] and not verdicts[failing]
    assert all(passed for name, passed in verdicts.items() if name != failing), verdicts
    assert report["summary"].startswith(f"failed: {failing} (")


def _registered() -> dict:
    """Register the evaluated candidate with the real registration pipeline; the registry afterwards."""
    run_pipeline(registration_pipeline())
    return ModelRegistryDataset(model_name=MODEL_NAME).load()


@pytest.mark.parametrize(
    "override",
    [
        {},
        {"evaluation.floors": {"roc_auc": 0.999}},
        {"evaluation.slices.floors": {"roc_auc": 0.999}},
        {"evaluation.serving.latency_budget_ms": {"single_row": 0.0001}},
    ],
    ids=["passes", "absolute_limits", "slices", "latency"],
)
def test_only_a_candidate_passing_every_gate_becomes_the_challenger(lake, override):
    """Gates to registry: a failed candidate is registered as failed and never gets an alias."""
    run_id = lake["candidate"]()
    report = _evaluate(lake["root"], **override)
    state = _registered()
    [version] = state["versions"].values()
    assert version["run_id"] == run_id
    assert version["tags"]["validation_status"] == ("passed" if report["passed"] else "failed")
    assert state["aliases"] == ({"challenger": version["version"]} if report["passed"] else {})
    assert report["passed"] == (override == {})


def test_failed_smoke_test_or_signature_never_reaches_an_alias(lake):
    lake["champion"]()
    lake["candidate"](
        _pipeline_model(numeric=["customer_activity__orders_30d"]), ["customer_activity__orders_30d", *CATEGORICAL]
    )
    assert not _evaluate(lake["root"])["passed"]
    assert _registered()["aliases"] == {"champion": "1"}
    lake["candidate"](LogisticRegression(), NUMERIC)
    assert not _evaluate(lake["root"])["passed"]
    state = _registered()
    assert state["aliases"] == {"champion": "1"}
    assert [
        v["tags"].get("validation_status") for v in sorted(state["versions"].values(), key=lambda v: int(v["version"]))
    ] == [
        None,
        "failed",
        "failed",
    ]


def test_champion_comparison_requires_the_configured_improvement(lake):
    lake["champion"]()
    lake["candidate"]()  # the same configuration on the same rows: equal figures
    same = _evaluate(lake["root"])
    assert same["passed"] and same["champion"]["version"] == "1"
    assert same["metrics"]["champion"]["overall"]["roc_auc"] == pytest.approx(
        same["metrics"]["candidate"]["overall"]["roc_auc"]
    )
    stricter = _evaluate(
        lake["root"], **{"evaluation.champion_comparison": {"mode": "min_improvement", "metrics": {"roc_auc": 0.05}}}
    )
    assert _verdicts(stricter)["champion_comparison"] is False and not stricter["passed"]


def test_a_candidate_dropping_a_served_column_breaks_the_signature(lake):
    lake["champion"]()
    lake["candidate"](
        _pipeline_model(numeric=["customer_activity__orders_30d"]), ["customer_activity__orders_30d", *CATEGORICAL]
    )
    report = _evaluate(lake["root"])
    signature = next(g for g in report["gates"] if g["name"] == "signature")
    assert (
        not signature["passed"]
        and "tenure_days (double) removed or renamed vs champion version 1" in signature["detail"]
    )


def test_a_model_without_imputation_fails_the_smoke_test(lake):
    """A bare logistic regression cannot score the all-null payload serving may send."""
    lake["candidate"](LogisticRegression(), NUMERIC)
    report = _evaluate(lake["root"])
    smoke = next(g for g in report["gates"] if g["name"] == "smoke_test")
    assert not smoke["passed"] and "all_null: scoring raised" in smoke["detail"]
    assert not report["passed"]


def test_a_changed_training_set_is_refused(lake):
    lake["candidate"]()
    write_deltalake(str(lake["root"] / "data/lakehouse/dev/ml/training_set"), lake["frame"].head(10), mode="append")
    assert DeltaTable(str(lake["root"] / "data/lakehouse/dev/ml/training_set")).version() == 1
    with pytest.raises(Exception, match="trained on training-set version 0 but the table is at version 1"):
        _evaluate(lake["root"])
