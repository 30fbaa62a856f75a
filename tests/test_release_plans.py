"""The release plans of ``lakehouse_ml.release`` on hand-made registry states (hand-worked alias
moves): promotion, with its approval and self-approval refusals, and rollback."""

from __future__ import annotations

import pytest

from lakehouse_ml.release import ReleaseRefusedError, plan_promotion, plan_rollback, release_tags
from tests.pipelines.registration.releases import (
    CAROL,
    DEV_PROMOTION,
    GOVERNANCE,
    REGISTRY,
    STAGING_PROMOTION,
    alias_actions,
    state,
    version,
    version_tags,
)

ROLLBACK = {"reason": "latency regression"}


def test_the_first_promotion_makes_the_challenger_champion_and_tags_who_promoted_it():
    actions, event = plan_promotion(state(version("1", aliases=("challenger",))), REGISTRY, DEV_PROMOTION, CAROL)
    assert alias_actions(actions) == [
        {"action": "set_alias", "alias": "champion", "version": "1"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert version_tags(actions) == {
        ("1", key): value for key, value in release_tags("promotion", CAROL, "promotion").items()
    }
    assert version_tags(actions)[("1", "promotion.actor")] == "carol" and event["via"] == "promotion"
    assert event["moves"] == [
        {"alias": "champion", "from_version": None, "to_version": "1"},
        {"alias": "challenger", "from_version": "1", "to_version": None},
    ]
    assert (event["action"], event["reason"], event["gate_report"]) == (
        "promote",
        DEV_PROMOTION["reason"],
        "runs:/eval1/reports/gates.json",
    )


def test_a_later_promotion_keeps_the_old_champion_as_previous():
    current = state(
        version("1", aliases=("previous_champion",)),
        version("2", aliases=("champion",)),
        version("3", aliases=("challenger",)),
    )
    actions, event = plan_promotion(current, REGISTRY, DEV_PROMOTION, CAROL)
    assert alias_actions(actions) == [
        {"action": "set_alias", "alias": "previous_champion", "version": "2"},
        {"action": "set_alias", "alias": "champion", "version": "3"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert [(m["alias"], m["from_version"], m["to_version"]) for m in event["moves"]] == [
        ("previous_champion", "1", "2"),
        ("champion", "2", "3"),
        ("challenger", "3", None),
    ]
    assert {version for version, _ in version_tags(actions)} == {"3"}  # only the promoted version is tagged


def test_approval_is_required_where_configured_and_the_refusal_says_how_to_approve():
    current = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",)))
    with pytest.raises(ReleaseRefusedError) as refused:
        plan_promotion(current, REGISTRY, STAGING_PROMOTION, CAROL)
    message = str(refused.value)
    assert "dev.ml.churn_classifier version 2 needs approval" in message and "runs:/eval2/reports/gates.json" in message
    assert (
        "MlflowClient().set_model_version_tag('dev.ml.churn_classifier', '2', 'approved_by', '<your name>')" in message
    )
    approved = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",), approved_by="bob"))
    actions, event = plan_promotion(approved, REGISTRY, STAGING_PROMOTION, CAROL)
    assert len(alias_actions(actions)) == 3 and event["approved_by"] == "bob"


@pytest.mark.parametrize(
    ("current", "refusal"),
    [
        (state(), "nothing to promote: dev.ml.churn_classifier has no 'challenger' alias"),
        (state(version("1", aliases=("champion",))), "nothing to promote"),
        (state(version("1", aliases=("challenger", "champion"))), "version 1 is already 'champion'"),
        (state(version("1", aliases=("challenger",), validation_status="failed")), "its validation_status is 'failed'"),
    ],
)
def test_promotion_refuses_without_a_promotable_challenger(current, refusal):
    with pytest.raises(ReleaseRefusedError, match=refusal):
        plan_promotion(current, REGISTRY, DEV_PROMOTION, CAROL)


def test_prod_refuses_a_promotion_by_the_approver_themself():
    prod = {**STAGING_PROMOTION, "forbid_self_approval": True}
    approved = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",), approved_by="carol"))
    with pytest.raises(ReleaseRefusedError, match="approved by 'carol', who is also promoting it .*'carol', os_user"):
        plan_promotion(approved, REGISTRY, prod, CAROL)
    # The approver's tag is typed by hand: case and spaces do not make them someone else.
    typed = state(version("2", aliases=("challenger",), approved_by=" Carol"))
    with pytest.raises(ReleaseRefusedError, match="who is also promoting it"):
        plan_promotion(typed, REGISTRY, prod, CAROL)
    # Only the run's identity counts: a parameter naming another actor changes nothing.
    with pytest.raises(ReleaseRefusedError, match="who is also promoting it"):
        plan_promotion(approved, REGISTRY, {**prod, "actor": "dave"}, CAROL)
    actions, event = plan_promotion(approved, REGISTRY, prod, {**GOVERNANCE, "actor": "dave"})
    assert len(alias_actions(actions)) == 3 and event["approved_by"] == "carol"
    assert version_tags(actions)[("2", "promotion.actor")] == "dave"
    assert len(alias_actions(plan_promotion(approved, REGISTRY, STAGING_PROMOTION, CAROL)[0])) == 3  # staging allows it


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
