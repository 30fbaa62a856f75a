"""Rollback plans on hand-made registry states (hand-worked alias moves) and its refusal."""

from __future__ import annotations

import pytest

from lakehouse_ml.pipelines.rollback.nodes import plan_rollback
from lakehouse_ml.release import ReleaseRefusedError, release_tags
from tests.pipelines.registration.releases import GOVERNANCE, REGISTRY, state, version

ROLLBACK = {"reason": "latency regression"}


def test_rollback_restores_the_previous_champion_uses_it_up_and_tags_who_restored_it():
    current = state(
        version("1", aliases=("previous_champion",)),
        version("2", aliases=("champion",)),
        version("3", aliases=("challenger",)),
    )
    actions, event = plan_rollback(current, REGISTRY, ROLLBACK, GOVERNANCE)
    tags = release_tags("rollback", GOVERNANCE, "rollback")
    assert actions == [
        {"action": "set_alias", "alias": "champion", "version": "1"},
        {"action": "delete_alias", "alias": "previous_champion"},
        *({"action": "set_version_tag", "version": "1", "key": key, "value": value} for key, value in tags.items()),
    ]
    assert event["via"] == "rollback"
    assert event["moves"] == [
        {"alias": "champion", "from_version": "2", "to_version": "1"},
        {"alias": "previous_champion", "from_version": "1", "to_version": None},
    ]
    assert (event["action"], event["reason"], event["gate_report"]) == (
        "rollback",
        "latency regression",
        "runs:/eval1/reports/gates.json",
    )


@pytest.mark.parametrize("current", [state(), state(version("1", aliases=("champion",)))])
def test_rollback_refuses_when_there_is_nothing_to_roll_back_to(current):
    with pytest.raises(
        ReleaseRefusedError, match="nothing to roll back to: dev.ml.churn_classifier has no 'previous_champion' alias"
    ):
        plan_rollback(current, REGISTRY, ROLLBACK, GOVERNANCE)
