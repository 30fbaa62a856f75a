"""The registration pipeline on the real catalog, a real MLflow registry (fresh tmp store) and the
real audit table: passing candidates become challenger, failed ones never get an alias, and a
re-run registers nothing twice."""

from __future__ import annotations

import logging

import pytest

from lakehouse_ml.governance import os_user
from lakehouse_ml.pipelines.registration.pipeline import create_pipeline
from tests.pipelines.registration.releases import audit_rows, log_candidate, registry_state, run_release


def test_a_passing_candidate_becomes_the_challenger_with_its_lineage(release_store):
    run_id = log_candidate(release_store)
    [row] = run_release(release_store, create_pipeline())
    registry = registry_state()
    assert registry["aliases"] == {"challenger": "1"}
    tags = registry["versions"]["1"]["tags"]
    assert (tags["run_id"], tags["validation_status"], tags["operating_threshold"]) == (run_id, "passed", "0.3")
    assert (tags["training_set_table"], tags["contract_hash.customer_activity"]) == (
        "dev.ml.training_set",
        "1760dcff4ff84b0f",
    )
    assert "**Intended use.** Monthly churn-risk scoring" in registry["versions"]["1"]["description"]
    assert {
        k: row[k] for k in ("action", "model_name", "alias", "from_version", "to_version", "actor", "catalog", "via")
    } == {
        "action": "register_challenger",
        "model_name": "dev.ml.churn_classifier",
        "alias": "challenger",
        "from_version": None,
        "to_version": "1",
        "actor": os_user(),
        "catalog": "dev",
        "via": "registration",
    }
    assert (tags["registration.actor"], tags["registration.policy_sha256"]) == (os_user(), row["policy_sha256"])
    assert row["gate_report"] == f"runs:/eval-{run_id}/reports/gates.json"
    # The next passing candidate takes the alias over.
    log_candidate(release_store)
    [row] = run_release(release_store, create_pipeline())
    assert (row["from_version"], row["to_version"]) == ("1", "2") and registry_state()["aliases"] == {"challenger": "2"}


def test_a_failed_candidate_never_gets_an_alias(release_store):
    log_candidate(release_store, passed=False)
    assert run_release(release_store, create_pipeline()) == []
    registry = registry_state()
    assert registry["aliases"] == {} and registry["versions"]["1"]["tags"]["validation_status"] == "failed"
    log_candidate(release_store, passed=False)
    assert run_release(release_store, create_pipeline(), params={"registration": {"register_failed": False}}) == []
    assert list(registry_state()["versions"]) == ["1"]
    assert audit_rows(release_store) == []


def test_registering_the_same_candidate_again_creates_no_version(release_store, caplog):
    run_id = log_candidate(release_store)
    run_release(release_store, create_pipeline())
    with caplog.at_level(logging.INFO, logger="lakehouse_ml"):
        assert run_release(release_store, create_pipeline()) == []
    assert list(registry_state()["versions"]) == ["1"] and len(audit_rows(release_store)) == 1
    assert f"candidate run {run_id} is already dev.ml.churn_classifier version 1" in caplog.text


def test_a_gates_report_about_another_candidate_is_refused(release_store):
    log_candidate(release_store)
    evaluated = (release_store / "data/08_reporting/dev/evaluation/gates.json").read_text()
    log_candidate(release_store)  # retrained, not evaluated yet
    (release_store / "data/08_reporting/dev/evaluation/gates.json").write_text(evaluated)
    with pytest.raises(Exception, match="gates report is for candidate run .* but candidate.json names run"):
        run_release(release_store, create_pipeline())
    assert not registry_state()["exists"]
