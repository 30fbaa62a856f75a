"""What executing monitoring actions changes: rollbacks, promotion blocks, one retraining request,
and the final status of every fired action."""

from __future__ import annotations

from datetime import date

import pandas as pd

from lakehouse_ml.monitoring.actions import execution_plan, with_outcomes
from tests.pipelines.registration.releases import GOVERNANCE


def _decided(action: str, status: str = "to_execute", version: str = "2", target: str | None = "2") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "action_id": f"id-{action}",
                "rule": f"rule_{action}",
                "action": action,
                "model_name": "m",
                "model_version": version,
                "window_start": date(2026, 6, 2),
                "window_end": date(2026, 6, 3),
                "breached_windows": 2,
                "considered_windows": 3,
                "evidence": "[]",
                "description": "",
                "mode": "execute",
                "status": status,
                "blocked_reason": None,
                "target_version": target,
            }
        ]
    )


STATE = {
    "name": "m",
    "exists": True,
    "aliases": {"champion": "2", "previous_champion": "1", "challenger": "3"},
    "versions": {v: {"version": v, "tags": {"gates_report": f"r{v}"}} for v in ("1", "2", "3")},
}
REGISTRY = {
    "model_name": "m",
    "aliases": {"challenger": "challenger", "champion": "champion", "previous_champion": "previous_champion"},
}


def test_an_executed_rollback_moves_champion_back_and_is_audited_as_a_rollback():
    actions, event, retrain, outcome = execution_plan(_decided("rollback"), STATE, REGISTRY, GOVERNANCE)

    assert [a for a in actions if a["action"] != "set_version_tag"] == [
        {"action": "set_alias", "alias": "champion", "version": "1"},
        {"action": "delete_alias", "alias": "previous_champion"},
    ]
    # Who: whoever runs the monitoring job; how: via monitoring (a rule, not a person's rollback run).
    tags = {a["key"]: a["value"] for a in actions if a["action"] == "set_version_tag" and a["version"] == "1"}
    assert (tags["rollback.actor"], tags["rollback.via"]) == (GOVERNANCE["actor"], "monitoring")
    assert event["action"] == "rollback" and event["via"] == "monitoring"
    assert event["reason"] == "monitoring rule rule_rollback: 2 of the last 3 windows up to 2026-06-03"
    assert retrain == {} and outcome == {"id-rollback": ("executed", None)}


def test_a_rollback_of_a_version_that_is_no_longer_champion_fails_with_the_reason():
    actions, event, _, outcome = execution_plan(_decided("rollback", version="1"), STATE, REGISTRY, GOVERNANCE)

    assert actions == [] and event["moves"] == []
    assert outcome["id-rollback"] == ("failed", "version 1 is no longer 'champion' (it is 2)")


def test_block_promotion_tags_the_challenger_and_retrain_becomes_one_request():
    decided = pd.concat(
        [_decided("block_promotion", target="3"), _decided("retrain"), _decided("retrain").assign(action_id="id-2")]
    )

    actions, _, retrain, outcome = execution_plan(decided, STATE, REGISTRY, GOVERNANCE)

    assert actions == [
        {
            "action": "set_version_tag",
            "version": "3",
            "key": "promotion_blocked",
            "value": "monitoring rule rule_block_promotion fired on version 2 (action id-block_promotion)",
        }
    ]
    assert retrain == {"reason": "monitoring rule rule_retrain on version 2", "action_ids": ["id-retrain", "id-2"]}
    assert set(outcome.values()) == {("executed", None)}


def test_alerts_and_blocked_actions_change_nothing_and_keep_their_status():
    decided = pd.concat(
        [_decided("retrain", status="alerted"), _decided("rollback", status="blocked").assign(blocked_reason="x")]
    )

    actions, event, retrain, outcome = execution_plan(decided, STATE, REGISTRY, GOVERNANCE)
    recorded = with_outcomes(decided, outcome, STATE)

    assert (actions, event["moves"], retrain, outcome) == ([], [], {}, {})
    assert list(recorded["status"]) == ["alerted", "blocked"] and list(recorded["blocked_reason"].fillna("-")) == [
        "-",
        "x",
    ]
