"""Monitoring actions: the rules fired on a run's signals under the environment's policy, and what
executing them changes (rollback alias moves, promotion blocks, one retraining request)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse_ml.monitoring.rules import RESOLVED_COLUMNS, evaluate_rules, resolve_actions, validate_rules
from lakehouse_ml.monitoring.served import WINDOW
from lakehouse_ml.release import BLOCK_TAG, ReleaseRefusedError, plan_rollback, release_event

logger = logging.getLogger(__name__)

# The recorded actions table: each resolved firing, then what executing it did and where.
ACTION_TABLE_COLUMNS = [*RESOLVED_COLUMNS, "target_version", "fired_at", "catalog", "kedro_run_id"]


def promotion_times(promotions: DataFrame, model_name: str) -> dict[str, datetime]:
    """When each version last became champion (promotion or rollback onto it)."""
    rows = (
        promotions.where(
            (F.col("model_name") == model_name) & (F.col("alias") == "champion") & F.col("to_version").isNotNull()
        )
        .groupBy(F.col("to_version").cast("string").alias("version"))
        .agg(F.max("event_ts").alias("at"))
        .collect()
    )
    return {f"{model_name}/{row['version']}": row["at"] for row in rows}


def _target(action: str, version: str, registry_state: Mapping[str, Any], registry: Mapping[str, Any]) -> str | None:
    """The version an action changes: a block applies to the waiting challenger, the rest to the monitored version."""
    if action == "block_promotion":
        return registry_state["aliases"].get(registry["aliases"]["challenger"])
    return version


def _keep_recorded(actions: pd.DataFrame, recorded: pd.DataFrame) -> pd.DataFrame:
    """Actions fired again on the same windows (same ``action_id``) keep their recorded row: a re-run of
    monitoring never executes an action twice (nor retries one that failed: the next window decides)."""
    known = recorded[recorded["action_id"].isin(actions["action_id"])]
    if known.empty:
        return actions
    logger.info("monitoring: %d action(s) already recorded for these windows, not acted on again", len(known))
    fresh = actions[~actions["action_id"].isin(known["action_id"])]
    kept = known.reindex(columns=ACTION_TABLE_COLUMNS)
    return pd.concat([fresh, kept], ignore_index=True) if len(fresh) else kept.reset_index(drop=True)


def decided_actions(
    signals: pd.DataFrame,
    recorded: pd.DataFrame,
    promoted: Mapping[str, datetime],
    registry_state: Mapping[str, Any],
    registry: Mapping[str, Any],
    rules: Sequence[Mapping[str, Any]],
    policy: Mapping[str, str],
    context: Mapping[str, Any],
) -> pd.DataFrame:
    """Fire the rules on ``signals`` (N of the last K windows, the latest included) and apply the
    environment's ``policy``: alert, or execute (blocked when it must not run); actions already recorded
    for the same windows keep their record."""
    validated = validate_rules(rules)
    fired = evaluate_rules(signals, validated, promotions=promoted)
    actions = resolve_actions(fired, policy)
    actions["target_version"] = [
        _target(a, v, registry_state, registry) for a, v in zip(actions["action"], actions["model_version"])
    ]
    no_target = (
        (actions["action"] == "block_promotion")
        & actions["target_version"].isna()
        & (actions["status"] == "to_execute")
    )
    actions.loc[no_target, ["status", "blocked_reason"]] = ["blocked", "no challenger is waiting for promotion"]
    actions["fired_at"] = context["at"]
    actions["catalog"] = context["catalog"]
    actions["kedro_run_id"] = context["kedro_run_id"]
    frame = _keep_recorded(actions.reindex(columns=ACTION_TABLE_COLUMNS), recorded)
    for row in frame.itertuples():
        logger.warning(
            "monitoring action %s (%s, %s): rule %s on %s version %s, %d of the last %d windows up to %s%s",
            row.action,
            row.mode,
            row.status,
            row.rule,
            row.model_name,
            row.model_version,
            row.breached_windows,
            row.considered_windows,
            row.window_end,
            f" — {row.blocked_reason}" if row.blocked_reason else "",
        )
    logger.info("monitoring: %d rule(s), %d action(s) fired", len(validated), len(frame))
    for column in WINDOW:
        frame[column] = pd.to_datetime(frame[column]).dt.date
    return frame


def _rollback(
    row: Mapping[str, Any], registry_state: dict[str, Any], registry: dict[str, Any], governance: dict[str, Any]
) -> tuple[list, dict, str | None]:
    """The rollback's registry actions and release event, or the reason it cannot run.

    The actor is whoever runs the monitoring job (its governance record), as for any rollback;
    ``via: monitoring`` tells a rule's rollback from a person's ``kedro run --pipeline rollback``.
    """
    champion = registry_state["aliases"].get(registry["aliases"]["champion"])
    if champion != str(row["model_version"]):
        return (
            [],
            {},
            f"version {row['model_version']} is no longer '{registry['aliases']['champion']}' (it is {champion})",
        )
    reason = f"monitoring rule {row['rule']}: {row['breached_windows']} of the last {row['considered_windows']} windows up to {row['window_end']}"
    try:
        actions, event = plan_rollback(registry_state, registry, {"reason": reason}, governance, via="monitoring")
    except ReleaseRefusedError as error:
        return [], {}, str(error)
    return actions, event, None


def execution_plan(
    decided: pd.DataFrame, registry_state: dict[str, Any], registry: dict[str, Any], governance: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What the actions to execute change: registry actions (rollback alias moves, promotion blocks) with
    their release event, a retraining request (empty: nothing to run), and each action's outcome."""
    registry_actions: list[dict[str, Any]] = []
    event = release_event("rollback", registry_state["name"], [], via="monitoring")
    retrain: dict[str, Any] = {}
    outcome: dict[str, Any] = {}
    for row in decided[decided["status"] == "to_execute"].to_dict("records"):
        if row["action"] == "rollback":
            actions, planned, refused = _rollback(row, registry_state, registry, governance)
            if refused is None and not event["moves"]:
                registry_actions += actions
                event = planned
            outcome[row["action_id"]] = ("failed", refused) if refused else ("executed", None)
        elif row["action"] == "block_promotion":
            reason = (
                f"monitoring rule {row['rule']} fired on version {row['model_version']} (action {row['action_id']})"
            )
            registry_actions.append(
                {"action": "set_version_tag", "version": row["target_version"], "key": BLOCK_TAG, "value": reason}
            )
            outcome[row["action_id"]] = ("executed", None)
        elif row["action"] == "retrain":
            retrain = retrain or {
                "reason": f"monitoring rule {row['rule']} on version {row['model_version']}",
                "action_ids": [],
            }
            retrain["action_ids"].append(row["action_id"])
            outcome[row["action_id"]] = ("executed", None)
        else:
            outcome[row["action_id"]] = ("alerted", f"{row['action']} is done by people; nothing runs")
    return registry_actions, event, retrain, outcome


def with_outcomes(decided: pd.DataFrame, outcome: Mapping[str, Any], registry_after: Mapping[str, Any]) -> pd.DataFrame:
    """The fired actions with their final status (executed, failed with the reason, alerted or blocked)."""
    frame = decided.copy()
    for action_id, (status, reason) in outcome.items():
        mask = frame["action_id"] == action_id
        frame.loc[mask, "status"] = status
        if reason:
            frame.loc[mask, "blocked_reason"] = reason
    for column in ("breached_windows", "considered_windows"):
        frame[column] = frame[column].astype("int64")
    logger.info(
        "monitoring actions: %s; registry %s",
        ", ".join(f"{a} {s}" for a, s in zip(frame["action"], frame["status"])) or "none",
        ", ".join(f"{alias}={version}" for alias, version in sorted(registry_after["aliases"].items())) or "no aliases",
    )
    return frame
