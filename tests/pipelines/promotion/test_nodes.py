"""Promotion plans on hand-made registry states (hand-worked alias moves) and its refusals."""

from __future__ import annotations

import pytest

from lakehouse_ml.pipelines.auto_promotion.nodes import name_the_champion, plan_automatic_promotion
from lakehouse_ml.pipelines.promotion.nodes import plan_promotion
from lakehouse_ml.release import ReleaseRefusedError, release_tags
from tests.pipelines.registration.releases import GOVERNANCE, REGISTRY, state, version

DEV = {
    "require_approval": False,
    "forbid_self_approval": False,
    "reason": "promote challenger after passing gates",
    "auto_promote": True,
    "auto_reason": "automatic",
}
STAGING = {**DEV, "require_approval": True, "auto_promote": False}
CAROL = {**GOVERNANCE, "actor": "carol"}  # who runs the promotion: the run's governance record


def _moves(actions):
    return [a for a in actions if a["action"] != "set_version_tag"]


def _tags(actions):
    return {(a["version"], a["key"]): a["value"] for a in actions if a["action"] == "set_version_tag"}


def test_the_first_promotion_makes_the_challenger_champion_and_tags_who_promoted_it():
    actions, event = plan_promotion(state(version("1", aliases=("challenger",))), REGISTRY, DEV, CAROL)
    assert _moves(actions) == [
        {"action": "set_alias", "alias": "champion", "version": "1"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert _tags(actions) == {("1", key): value for key, value in release_tags("promotion", CAROL, "promotion").items()}
    assert _tags(actions)[("1", "promotion.actor")] == "carol" and event["via"] == "promotion"
    assert event["moves"] == [
        {"alias": "champion", "from_version": None, "to_version": "1"},
        {"alias": "challenger", "from_version": "1", "to_version": None},
    ]
    assert (event["action"], event["reason"], event["gate_report"]) == (
        "promote",
        DEV["reason"],
        "runs:/eval1/reports/gates.json",
    )


def test_a_later_promotion_keeps_the_old_champion_as_previous():
    current = state(
        version("1", aliases=("previous_champion",)),
        version("2", aliases=("champion",)),
        version("3", aliases=("challenger",)),
    )
    actions, event = plan_promotion(current, REGISTRY, DEV, CAROL)
    assert _moves(actions) == [
        {"action": "set_alias", "alias": "previous_champion", "version": "2"},
        {"action": "set_alias", "alias": "champion", "version": "3"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert [(m["alias"], m["from_version"], m["to_version"]) for m in event["moves"]] == [
        ("previous_champion", "1", "2"),
        ("champion", "2", "3"),
        ("challenger", "3", None),
    ]
    assert {version for version, _ in _tags(actions)} == {"3"}  # only the promoted version is tagged


def test_approval_is_required_where_configured_and_the_refusal_says_how_to_approve():
    current = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",)))
    with pytest.raises(ReleaseRefusedError) as refused:
        plan_promotion(current, REGISTRY, STAGING, CAROL)
    message = str(refused.value)
    assert "dev.ml.churn_classifier version 2 needs approval" in message and "runs:/eval2/reports/gates.json" in message
    assert (
        "MlflowClient().set_model_version_tag('dev.ml.churn_classifier', '2', 'approved_by', '<your name>')" in message
    )
    approved = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",), approved_by="bob"))
    actions, event = plan_promotion(approved, REGISTRY, STAGING, CAROL)
    assert len(_moves(actions)) == 3 and event["approved_by"] == "bob"


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
        plan_promotion(current, REGISTRY, DEV, CAROL)


def test_the_default_run_promotes_a_passing_challenger_where_auto_promote_is_on():
    current = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",)))
    actions, event = plan_automatic_promotion(current, REGISTRY, DEV, CAROL)
    assert _moves(actions) == [
        {"action": "set_alias", "alias": "previous_champion", "version": "1"},
        {"action": "set_alias", "alias": "champion", "version": "2"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert (event["action"], event["reason"], event["via"]) == ("promote", "automatic", "auto_promotion")
    assert _tags(actions)[("2", "promotion.via")] == "auto_promotion"


@pytest.mark.parametrize(
    ("current", "policy", "waiting"),
    [
        (state(version("1", aliases=("champion",))), DEV, "no 'challenger' to promote; 'champion' stays version 1"),
        (state(), DEV, "no 'challenger' to promote; 'champion' stays no version"),
        (
            state(version("1", aliases=("champion",)), version("2", aliases=("challenger",))),
            STAGING,
            "version 2 waits as 'challenger'",
        ),
        # auto_promote on, approval required and missing: still no move, never a refusal
        (
            state(version("2", aliases=("challenger",))),
            {**STAGING, "auto_promote": True},
            "version 2 waits for approval",
        ),
    ],
)
def test_the_default_run_moves_nothing_and_says_what_waits(current, policy, waiting, caplog):
    caplog.set_level("INFO")
    actions, event = plan_automatic_promotion(current, REGISTRY, policy, CAROL)
    assert (actions, event["moves"]) == ([], [])
    assert waiting in caplog.text


def test_the_champion_after_the_release_step_is_named_by_role():
    after = state(version("1", aliases=("previous_champion",)), version("2", aliases=("champion",)))
    assert name_the_champion(after, REGISTRY) == {
        "model_name": "dev.ml.churn_classifier",
        "champion": "2",
        "challenger": None,
        "previous_champion": "1",
    }


def test_prod_refuses_a_promotion_by_the_approver_themself():
    prod = {**STAGING, "forbid_self_approval": True}
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
    assert len(_moves(actions)) == 3 and event["approved_by"] == "carol"
    assert _tags(actions)[("2", "promotion.actor")] == "dave"
    assert len(_moves(plan_promotion(approved, REGISTRY, STAGING, CAROL)[0])) == 3  # staging allows it
