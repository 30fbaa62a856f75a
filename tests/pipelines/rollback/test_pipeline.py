"""The rollback pipeline with the real registry and audit table: the previous champion comes back in
one step, and a second rollback refuses."""

from __future__ import annotations

import pytest

from lakehouse_ml.pipelines.promotion.pipeline import create_pipeline as promotion
from lakehouse_ml.pipelines.registration.pipeline import create_pipeline as registration
from lakehouse_ml.pipelines.rollback.pipeline import create_pipeline as rollback
from lakehouse_ml.release import ReleaseRefusedError
from tests.pipelines.registration.releases import audit_rows, log_candidate, registry_state, run_release


def test_rollback_restores_the_previous_champion_once(release_store):
    with pytest.raises(ReleaseRefusedError, match="nothing to roll back to"):
        run_release(release_store, rollback())
    for _ in range(2):
        log_candidate(release_store)
        run_release(release_store, registration())
        run_release(release_store, promotion())
    assert registry_state()["aliases"] == {"champion": "2", "previous_champion": "1"}

    rows = run_release(release_store, rollback(), params={"rollback": {"reason": "conversion dropped"}})
    assert registry_state()["aliases"] == {"champion": "1"}
    assert {(r["action"], r["alias"], r["from_version"], r["to_version"], r["reason"]) for r in rows} == {
        ("rollback", "champion", "2", "1", "conversion dropped"),
        ("rollback", "previous_champion", "1", None, "conversion dropped"),
    }
    with pytest.raises(
        ReleaseRefusedError, match="nothing to roll back to: dev.ml.churn_classifier has no 'previous_champion' alias"
    ):
        run_release(release_store, rollback())
    assert registry_state()["aliases"] == {"champion": "1"} and len(audit_rows(release_store)) == 9
