"""Promotion plans on hand-made registry states (hand-worked alias moves) and its refusals."""

from __future__ import annotations

import pytest

from lakehouse_ml.pipelines.promotion.nodes import plan_promotion
from lakehouse_ml.registry import ReleaseRefusedError
from tests.pipelines.registration.releases import REGISTRY, state, version

DEV = {"require_approval": False, "reason": "promote challenger after passing gates", "actor": None}
STAGING = {**DEV, "require_approval": True}


def test_the_first_promotion_makes_the_challenger_champion():
    actions, event = plan_promotion(state(version("1", aliases=("challenger",))), REGISTRY, DEV)
    assert actions == [
        {"action": "set_alias", "alias": "champion", "version": "1"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert event["moves"] == [
        {"alias": "champion", "from_version": None, "to_version": "1"},
        {"alias": "challenger", "from_version": "1", "to_version": None},
    ]
    assert (event["action"], event["reason"], event["gate_report"]) == ("promote", DEV["reason"], "runs:/eval1/reports/gates.json")


def test_a_later_promotion_keeps_the_old_champion_as_previous():
    current = state(version("1", aliases=("previous_champion",)), version("2", aliases=("champion",)), version("3", aliases=("challenger",)))
    actions, event = plan_promotion(current, REGISTRY, {**DEV, "actor": "alice"})
    assert actions == [
        {"action": "set_alias", "alias": "previous_champion", "version": "2"},
        {"action": "set_alias", "alias": "champion", "version": "3"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert [(m["alias"], m["from_version"], m["to_version"]) for m in event["moves"]] == [
        ("previous_champion", "1", "2"), ("champion", "2", "3"), ("challenger", "3", None),
    ]
    assert event["actor"] == "alice"


def test_approval_is_required_where_configured_and_the_refusal_says_how_to_approve():
    current = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",)))
    with pytest.raises(ReleaseRefusedError) as refused:
        plan_promotion(current, REGISTRY, STAGING)
    message = str(refused.value)
    assert "dev.ml.churn_classifier version 2 needs approval" in message and "runs:/eval2/reports/gates.json" in message
    assert "MlflowClient().set_model_version_tag('dev.ml.churn_classifier', '2', 'approved_by', '<your name>')" in message
    approved = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",), approved_by="bob"))
    actions, event = plan_promotion(approved, REGISTRY, STAGING)
    assert len(actions) == 3 and event["approved_by"] == "bob"


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
        plan_promotion(current, REGISTRY, DEV)
