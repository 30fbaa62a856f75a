"""The default run's automatic promotion on hand-made registry states: what moves, what waits."""

from __future__ import annotations

import pytest

from lakehouse_ml.pipelines.auto_promotion.nodes import name_the_champion, plan_automatic_promotion
from tests.pipelines.registration.releases import (
    CAROL,
    DEV_PROMOTION,
    REGISTRY,
    STAGING_PROMOTION,
    alias_actions,
    state,
    version,
    version_tags,
)


def test_the_default_run_promotes_a_passing_challenger_where_auto_promote_is_on():
    current = state(version("1", aliases=("champion",)), version("2", aliases=("challenger",)))
    actions, event = plan_automatic_promotion(current, REGISTRY, DEV_PROMOTION, CAROL)
    assert alias_actions(actions) == [
        {"action": "set_alias", "alias": "previous_champion", "version": "1"},
        {"action": "set_alias", "alias": "champion", "version": "2"},
        {"action": "delete_alias", "alias": "challenger"},
    ]
    assert (event["action"], event["reason"], event["via"]) == ("promote", "automatic", "auto_promotion")
    assert version_tags(actions)[("2", "promotion.via")] == "auto_promotion"


@pytest.mark.parametrize(
    ("current", "policy", "waiting"),
    [
        (
            state(version("1", aliases=("champion",))),
            DEV_PROMOTION,
            "no 'challenger' to promote; 'champion' stays version 1",
        ),
        (state(), DEV_PROMOTION, "no 'challenger' to promote; 'champion' stays no version"),
        (
            state(version("1", aliases=("champion",)), version("2", aliases=("challenger",))),
            STAGING_PROMOTION,
            "version 2 waits as 'challenger'",
        ),
        # auto_promote on, approval required and missing: still no move, never a refusal
        (
            state(version("2", aliases=("challenger",))),
            {**STAGING_PROMOTION, "auto_promote": True},
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
