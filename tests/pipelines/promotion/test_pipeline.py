"""The promotion pipeline with the real registry and audit table: challenger → champion, the old
champion kept as previous_champion, nothing to promote twice, and approval where required."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from lakehouse_ml.governance import os_user
from lakehouse_ml.pipelines.promotion.pipeline import create_pipeline as promotion
from lakehouse_ml.pipelines.registration.pipeline import create_pipeline as registration
from lakehouse_ml.release import ReleaseRefusedError
from tests.pipelines.registration.releases import audit_rows, log_candidate, registry_state, run_release


def _moves(rows):
    return {(row["action"], row["alias"], row["from_version"], row["to_version"]) for row in rows}


def test_a_passing_candidate_becomes_champion_and_the_next_keeps_it_as_previous(release_store):
    log_candidate(release_store)
    run_release(release_store, registration())
    first = run_release(release_store, promotion())
    assert registry_state()["aliases"] == {"champion": "1"}
    assert _moves(first) == {("promote", "champion", None, "1"), ("promote", "challenger", "1", None)}
    assert {(row["reason"], row["actor"], row["via"]) for row in first} == {
        ("promote challenger after passing gates", os_user(), "promotion")
    }
    assert registry_state()["versions"]["1"]["tags"]["promotion.actor"] == os_user()
    with pytest.raises(ReleaseRefusedError, match="nothing to promote"):
        run_release(release_store, promotion())

    log_candidate(release_store)
    run_release(release_store, registration())
    second = run_release(release_store, promotion(), params={"promotion": {"reason": "monthly release"}})
    assert registry_state()["aliases"] == {"champion": "2", "previous_champion": "1"}
    assert _moves(second) == {
        ("promote", "previous_champion", None, "1"),
        ("promote", "champion", "1", "2"),
        ("promote", "challenger", "2", None),
    }
    assert {(row["reason"], row["actor"]) for row in second} == {("monthly release", os_user())}
    assert len(audit_rows(release_store)) == 7  # 2 challengers registered + 2 + 3 promotion moves


def test_staging_promotion_needs_an_approved_by_tag(release_store):
    log_candidate(release_store, catalog="staging")
    run_release(release_store, registration(), env="staging")
    with pytest.raises(ReleaseRefusedError, match="staging.ml.churn_classifier version 1 needs approval") as refused:
        run_release(release_store, promotion(), env="staging")
    assert "set_model_version_tag('staging.ml.churn_classifier', '1', 'approved_by', '<your name>')" in str(
        refused.value
    )
    assert registry_state("staging")["aliases"] == {"challenger": "1"}

    MlflowClient().set_model_version_tag("staging.ml.churn_classifier", "1", "approved_by", "bob")
    rows = run_release(release_store, promotion(), env="staging")
    assert registry_state("staging")["aliases"] == {"champion": "1"}
    assert {(row["approved_by"], row["catalog"]) for row in rows} == {("bob", "staging")}
    assert audit_rows(release_store, "dev") == []
