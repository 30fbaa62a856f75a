"""Helpers for the release pipeline tests (registration, promotion, rollback): hand-made registry
states for the planning functions, and for pipeline runs a fresh MLflow store per test, tiny real
candidate runs, and a runner that checks the audit table gains exactly one row per alias move."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from deltalake import DeltaTable
from sklearn.linear_model import LogisticRegression

from lakehouse_ml.datasets import ModelRegistryDataset, PandasDeltaDataset
from lakehouse_ml.release import empty_registry_state
from tests.helpers import run_pipeline

REGISTRY = {
    "model_name": "dev.ml.churn_classifier",
    "aliases": {"challenger": "challenger", "champion": "champion", "previous_champion": "previous_champion"},
}
CONTEXT = {"at": datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc), "catalog": "dev", "kedro_run_id": "k1"}
# The run's governance record as GovernanceHooks makes it (lakehouse_ml.governance.release_governance).
GOVERNANCE = {
    "actor": "ci",
    "actor_source": "os_user",
    "host": "build-01",
    "policy": {
        "env": "local",
        "settings": {"promotion.require_approval": False},
        "sources": {"promotion.require_approval": ["conf/base/parameters_promotion.yml"]},
    },
    "policy_sha256": "0123456789abcdef",
}
# Promotion policies as conf/base (dev: automatic) and conf/staging (approval, no automatic move) set them.
DEV_PROMOTION = {
    "require_approval": False,
    "forbid_self_approval": False,
    "reason": "promote challenger after passing gates",
    "auto_promote": True,
    "auto_reason": "automatic",
}
STAGING_PROMOTION = {**DEV_PROMOTION, "require_approval": True, "auto_promote": False}
CAROL = {**GOVERNANCE, "actor": "carol"}  # who runs the promotion: the run's governance record


def alias_actions(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A plan's alias moves, without its version tags."""
    return [a for a in actions if a["action"] != "set_version_tag"]


def version_tags(actions: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """A plan's version tags as ``{(version, key): value}``."""
    return {(a["version"], a["key"]): a["value"] for a in actions if a["action"] == "set_version_tag"}


TRAIN_CUTOFFS = ["2026-03-31T00:00:00+00:00", "2026-04-07T00:00:00+00:00", "2026-04-14T00:00:00+00:00"]
TEST_CUTOFFS = ["2026-05-19T00:00:00+00:00", "2026-05-26T00:00:00+00:00"]
SOURCES = {
    "customer_activity": {"contract_hash": "1760dcff4ff84b0f", "version": 1},
    "customer_profile": {"contract_hash": "4d153ce5a8f6fab8", "version": 1},
    "orders_silver": {"contract_hash": None, "version": 0},
}


def version(number: str, *, run_id: str | None = None, aliases: tuple[str, ...] = (), **tags: str) -> dict[str, Any]:
    """A hand-made registry version (tags default to a passed one)."""
    run_id = run_id or f"run{number}"
    return {
        "version": number,
        "run_id": run_id,
        "source": f"models:/m-{number}",
        "status": "READY",
        "description": "",
        "tags": {
            "run_id": run_id,
            "validation_status": "passed",
            "gates_report": f"runs:/eval{number}/reports/gates.json",
            **tags,
        },
        "aliases": sorted(aliases),
    }


def state(*versions: dict[str, Any], name: str = REGISTRY["model_name"]) -> dict[str, Any]:
    """A hand-made registry state from versions (their aliases make the alias map)."""
    if not versions:
        return empty_registry_state(name)
    aliases = {alias: v["version"] for v in versions for alias in v["aliases"]}
    return {
        "name": name,
        "exists": True,
        "aliases": dict(sorted(aliases.items())),
        "versions": {v["version"]: v for v in versions},
    }


def candidate_pointer(run_id: str, training_set_path: str = "/p/data/lakehouse/dev/ml/training_set") -> dict[str, Any]:
    """A candidate.json as the training pipeline writes it."""
    return {
        "run_id": run_id,
        "model_uri": f"runs:/{run_id}/model",
        "git_sha": "abc123",
        "env": "local",
        "operating_threshold": {"strategy": "max_f1", "threshold": 0.3, "precision": 0.6, "recall": 0.5, "f1": 0.55},
        "test_metrics": {"roc_auc": 0.8},
        "training_set": {"path": training_set_path, "version": 3},
        "split": {"folds": [], "train_cutoffs": TRAIN_CUTOFFS, "test_cutoffs": TEST_CUTOFFS, "gap_cutoffs": 4},
    }


def gates_report(run_id: str, passed: bool = True) -> dict[str, Any]:
    """A gates report of the evaluation pipeline's shape."""
    return {
        "candidate": {"run_id": run_id, "model_uri": f"runs:/{run_id}/model"},
        "champion": None,
        "training_set": {"path": "/p/data/lakehouse/dev/ml/training_set", "version": 3},
        "test_cutoffs": TEST_CUTOFFS,
        "passed": passed,
        "gates": [
            {"name": "slices", "passed": passed, "detail": "ok" if passed else "roc_auc__country_US 0.61 < 0.65"}
        ],
        "summary": "6/6 gates passed" if passed else "failed: slices (roc_auc__country_US 0.61 < 0.65)",
        "evaluation_run_id": f"eval-{run_id}",
        "report_uri": f"runs:/eval-{run_id}/reports/gates.json",
    }


def provenance(run_id: str) -> dict[str, Any]:
    """The candidate run's reports/provenance.json (the part registration reads)."""
    return {
        "run_id": run_id,
        "training_set": {"path": "/p", "version": 3, "spec": {"sources": SOURCES}},
        # A model per run (candidates in these tests are different fits); registration's
        # fingerprint tells identical refits apart from new models by this part.
        "model": {"family": "logistic_regression", "params": {"C": sum(map(ord, run_id)) / 100}, "seed": 42},
    }


# ------------------------------------------------------------------------- real store and runs


@pytest.fixture
def release_store(tmp_path, monkeypatch):
    """A fresh MLflow tracking + registry store in tmp, the project's data folders under the cwd."""
    monkeypatch.chdir(tmp_path)
    # An earlier Kedro session in this process may have pointed the registry elsewhere (variable
    # and in-process URI); both are set to this store below, and put back by monkeypatch.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # start_run uses the default experiment of this store, whatever another test made active
    # (mlflow.set_experiment also exports it as MLFLOW_EXPERIMENT_ID).
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    previous, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Deleting the variable is not enough: set_registry_uri also keeps the URI in-process, so this
    # test's own registry calls would go to the earlier session's store (seen in CI only).
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    yield tmp_path
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous_registry)


def log_candidate(root: Path, *, passed: bool = True, catalog: str = "dev") -> str:
    """A real candidate run (tiny logistic regression, provenance artifact, nested in a parent run) with its
    candidate.json and gates report written where the catalog of ``catalog`` reads them; returns the run id."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 2))
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    with mlflow.start_run(), mlflow.start_run(nested=True) as run:
        run_id = run.info.run_id
        # Explicit requirements: inferring them costs seconds per model.
        logged = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        # As MlflowSignedModelDataset does: the run names its logged model.
        mlflow.set_tag("candidate_model_uri", logged.model_uri)
        mlflow.log_dict(provenance(run_id), "reports/provenance.json")
    files = {
        f"data/06_models/{catalog}/candidate.json": candidate_pointer(
            run_id, str(root / f"data/lakehouse/{catalog}/ml/training_set")
        ),
        f"data/08_reporting/{catalog}/evaluation/gates.json": gates_report(run_id, passed),
    }
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(content))
    return run_id


def registry_state(catalog: str = "dev") -> dict[str, Any]:
    """The registry state of the environment's model, as the pipelines load it."""
    return ModelRegistryDataset(model_name=f"{catalog}.ml.churn_classifier").load()


def audit_rows(root: Path, catalog: str = "dev") -> list[dict[str, Any]]:
    """The rows of <catalog>.ml.model_promotions (none before the first alias move)."""
    path = root / f"data/lakehouse/{catalog}/ml/model_promotions"
    if not DeltaTable.is_deltatable(str(path)):
        return []
    frame = PandasDeltaDataset(filepath=str(path)).load().sort_values(["event_ts", "event_id"])
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def run_release(
    root: Path, pipeline: Any, *, env: str = "local", params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run a release pipeline; check the audit gained exactly one row per alias that moved; return the new rows."""
    catalog = "dev" if env == "local" else env
    before, rows_before = registry_state(catalog)["aliases"], audit_rows(root, catalog)
    run_pipeline(pipeline, env=env, runtime_params=params)
    after, rows = registry_state(catalog)["aliases"], audit_rows(root, catalog)
    new = rows[len(rows_before) :]
    moved = {
        alias: (before.get(alias), after.get(alias))
        for alias in before.keys() | after.keys()
        if before.get(alias) != after.get(alias)
    }
    assert {row["alias"]: (row["from_version"], row["to_version"]) for row in new} == moved
    assert len(new) == len(moved)
    return new
