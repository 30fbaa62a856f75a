"""Registration plans on hand-made registry states: what is registered, with which tags and
description, and which alias moves (hand-worked)."""

from __future__ import annotations

import logging

import pytest

from lakehouse_ml.pipelines.registration.nodes import candidate_fingerprint, lineage_tags, plan_registration
from lakehouse_ml.release import REGISTERED, release_tags
from tests.pipelines.registration.releases import (
    GOVERNANCE,
    REGISTRY,
    candidate_pointer,
    gates_report,
    provenance,
    state,
    version,
)

REGISTRATION = {
    "register_failed": True,
    "intended_use": "Monthly churn-risk scoring.",
    "limitations": ["Simulated data.", "Trained on {n_train_cutoffs} weekly cutoffs ({train_start} to {train_end})."],
}


def _run(run_id: str = "r9") -> dict:
    return {
        "run_id": run_id,
        "tags": {"mlflow.parentRunId": "p9", "candidate_model_uri": "models:/m-9"},
        "provenance": provenance(run_id),
    }


def _plan(current, passed=True, run_id="r9", **registration):
    return plan_registration(
        candidate_pointer(run_id),
        _run(run_id),
        gates_report(run_id, passed),
        current,
        REGISTRY,
        {**REGISTRATION, **registration},
        GOVERNANCE,
    )


def test_lineage_tags_name_runs_code_training_set_contracts_verdict_threshold_and_report():
    assert lineage_tags(candidate_pointer("r9"), _run(), gates_report("r9", passed=False)) == {
        "run_id": "r9",
        "parent_run_id": "p9",
        "git_sha": "abc123",
        "training_set_table": "dev.ml.training_set",
        "training_set_version": "3",
        "contract_hash.customer_activity": "1760dcff4ff84b0f",
        "contract_hash.customer_profile": "4d153ce5a8f6fab8",
        "contract_hash.orders_silver": "none",
        "validation_status": "failed",
        "operating_threshold": "0.3",
        "gates_report": "runs:/eval-r9/reports/gates.json",
        "fingerprint": candidate_fingerprint(candidate_pointer("r9"), _run()),
    }


def test_a_passing_candidate_is_registered_and_becomes_the_challenger():
    actions, event = _plan(state(version("1", aliases=("champion",)), version("2", aliases=("challenger",))))
    register, alias = actions
    assert {k: register[k] for k in ("action", "model_uri", "run_id")} == {
        "action": "register",
        "model_uri": "models:/m-9",
        "run_id": "r9",
    }
    assert register["tags"]["validation_status"] == "passed"
    # Who registered it, from where, under which policy: tags of the new version itself.
    assert register["tags"].items() >= release_tags("registration", GOVERNANCE, "registration").items()
    assert event["via"] == "registration"
    description = register["description"]
    for text in (
        "Training window: 3 cutoffs, 2026-03-31 to 2026-04-14",
        "Test window: 2 cutoffs, 2026-05-19 to 2026-05-26",
        "`dev.ml.training_set` version 3",
        "Operating threshold: 0.3000 (max_f1)",
        "Gates: 6/6 gates passed",
        "**Intended use.** Monthly churn-risk scoring.",
        "- Trained on 3 weekly cutoffs (2026-03-31 to 2026-04-14).",
    ):
        assert text in description
    # The old challenger (never promoted) is replaced; the champion is untouched.
    assert alias == {"action": "set_alias", "alias": "challenger", "version": REGISTERED}
    assert event["action"] == "register_challenger" and event["gate_report"] == "runs:/eval-r9/reports/gates.json"
    assert event["moves"] == [{"alias": "challenger", "from_version": "2", "to_version": REGISTERED}]


def test_a_failed_candidate_is_registered_as_failed_without_an_alias():
    actions, event = _plan(state(version("1", aliases=("champion",))), passed=False)
    assert [a["action"] for a in actions] == ["register"] and actions[0]["tags"]["validation_status"] == "failed"
    assert "Gates: failed: slices (roc_auc__country_US 0.61 < 0.65)" in actions[0]["description"]
    assert event["moves"] == []


def test_a_failed_candidate_is_not_registered_when_configured(caplog):
    with caplog.at_level(logging.WARNING):
        actions, event = _plan(state(), passed=False, register_failed=False)
    assert actions == [] and event["moves"] == []
    assert "registration.register_failed is false: not registered" in caplog.text


def test_a_registered_run_is_not_registered_again(caplog):
    current = state(version("1", run_id="r9", aliases=("challenger",)))
    with caplog.at_level(logging.INFO):
        actions, event = _plan(current)
    assert actions == [] and event["moves"] == []
    assert "candidate run r9 is already dev.ml.churn_classifier version 1" in caplog.text
    assert "idempotent on the run id" in caplog.text


def test_a_refit_of_the_same_model_in_a_new_run_is_not_registered_again(caplog):
    """Same training-set version, model, features and split, another run id: already released."""
    tags = lineage_tags(candidate_pointer("r9"), _run("r9"), gates_report("r9"))
    current = state(version("1", run_id="r9", aliases=("challenger",), fingerprint=tags["fingerprint"]))
    refit = {**_run("r10"), "provenance": provenance("r9")}  # the same model, fitted again in run r10
    with caplog.at_level(logging.INFO):
        actions, event = plan_registration(
            candidate_pointer("r10"), refit, gates_report("r10"), current, REGISTRY, REGISTRATION, GOVERNANCE
        )
    assert actions == [] and event["moves"] == []
    assert f"same fingerprint {tags['fingerprint']}" in caplog.text
    changed = {
        **candidate_pointer("r10"),
        "training_set": {"path": "/p/data/lakehouse/dev/ml/training_set", "version": 4},
    }
    actions, _ = plan_registration(changed, refit, gates_report("r10"), current, REGISTRY, REGISTRATION, GOVERNANCE)
    assert actions[0]["action"] == "register"  # a new training-set version is a new model


def test_a_gates_report_about_another_candidate_is_an_error():
    with pytest.raises(ValueError, match="gates report is for candidate run r8 but candidate.json names run r9"):
        plan_registration(
            candidate_pointer("r9"), _run(), gates_report("r8"), state(), REGISTRY, REGISTRATION, GOVERNANCE
        )
