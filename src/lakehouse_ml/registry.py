"""The release vocabulary shared by the registration, promotion and rollback pipelines.

A registry *state* is what ``lakehouse_ml.datasets.ModelRegistryDataset`` loads: ``{name, exists,
aliases: {alias: version}, versions: {version: {version, run_id, source, status, description,
tags, aliases}}}``. Pipelines plan *actions* from it (``register``, ``set_alias``,
``delete_alias``, ``set_version_tag``), which the same dataset applies, and a release *event*
(what was done, why, through which pipeline) whose alias *moves* become rows of
``ml.model_promotions``. Who released, from which host and under which policy is the run's
*governance* record (``lakehouse_ml.governance``), never a parameter. Every function here is
pure: releases are tested on hand-made states. Versions are named explicitly or through an
alias, never by recency.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline, node

logger = logging.getLogger(__name__)

# A version number that does not exist yet: the one the preceding "register" action creates.
REGISTERED = "$registered"
AUDIT_COLUMNS = [
    "event_id", "event_ts", "model_name", "action", "alias", "from_version", "to_version",
    "actor", "approved_by", "reason", "gate_report", "catalog", "kedro_run_id",
    # Added with release governance: earlier rows of an existing table read null here.
    "actor_source", "via", "host", "policy_sha256", "policy",
]


class ReleaseRefusedError(RuntimeError):
    """A release the registry's state or the environment's policy does not allow."""


def empty_registry_state(name: str) -> dict[str, Any]:
    """The state of a model that has never been registered."""
    return {"name": name, "exists": False, "aliases": {}, "versions": {}}


def check_model(state: dict[str, Any], registry: dict[str, Any]) -> str:
    """The model name of ``params:registry``, checked against the loaded state's."""
    name = registry["model_name"]
    if state["name"] != name:
        raise ValueError(f"the catalog's registry entry is model '{state['name']}' but params:registry names '{name}'")
    return name


def version_of_run(state: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    """The version registered from MLflow run ``run_id``, if any."""
    found = [v for v in state["versions"].values() if run_id in (v.get("run_id"), v["tags"].get("run_id"))]
    return found[0] if found else None


def alias_moves(state: dict[str, Any], targets: dict[str, str | None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The actions pointing each alias at its target version (``None`` removes it), and the moves they make."""
    actions, moves = [], []
    for alias, version in targets.items():
        current = state["aliases"].get(alias)
        if current == version:
            continue
        if version is None:
            actions.append({"action": "delete_alias", "alias": alias})
        else:
            actions.append({"action": "set_alias", "alias": alias, "version": version})
        moves.append({"alias": alias, "from_version": current, "to_version": version})
    return actions, moves


def release_event(action: str, model_name: str, moves: list[dict[str, Any]], **details: Any) -> dict[str, Any]:
    """A release event: its action name, model, alias moves and details (reason, approved_by, gate_report, via).

    ``via`` is the pipeline that moved the aliases (``registration``, ``promotion``, ``auto_promotion``,
    ``rollback``, ``monitoring``): how, not who; who is the run's governance record.
    """
    defaults = {"reason": None, "approved_by": None, "gate_report": None, "via": None}
    return {"action": action, "model_name": model_name, "moves": moves, **defaults, **details}


def release_tags(step: str, governance: dict[str, Any], via: str) -> dict[str, str]:
    """Version tags recording a release step (``registration``, ``promotion``, ``rollback``): who, where, how, under which policy.

    Next to ``approved_by``, so the version's page shows who released it; the audit table keeps
    every event, a tag only the latest of its step.
    """
    return {
        f"{step}.actor": governance["actor"],
        f"{step}.actor_source": governance["actor_source"],
        f"{step}.host": governance["host"],
        f"{step}.via": via,
        f"{step}.policy_sha256": governance["policy_sha256"],
        f"{step}.policy": json.dumps({"env": governance["policy"]["env"], **governance["policy"]["settings"]}, sort_keys=True),
    }


def tag_actions(version: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    """``set_version_tag`` actions writing ``tags`` on ``version``."""
    return [{"action": "set_version_tag", "version": version, "key": key, "value": value} for key, value in tags.items()]


def record_alias_moves(
    event: dict[str, Any], registry_after: dict[str, Any], context: dict[str, Any], governance: dict[str, Any]
) -> pd.DataFrame:
    """One ``ml.model_promotions`` row per alias move of ``event``, checked against the registry after it.

    ``context`` says when and in which run, ``governance`` who (and how that is known), from which
    host and under which policy.
    """
    rows = []
    for number, move in enumerate(event["moves"]):
        alias, planned = move["alias"], move["to_version"]
        actual = registry_after["aliases"].get(alias)
        if (planned == REGISTERED and actual is None) or (planned != REGISTERED and actual != planned):
            raise RuntimeError(
                f"{event['model_name']}@{alias} is at version {actual} after the release, expected {planned}: "
                "was the registry changed concurrently? Check the registry before releasing again"
            )
        key = f"{event['model_name']}|{context['at'].isoformat()}|{number}|{alias}"
        rows.append({
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
            "event_ts": context["at"],
            "model_name": event["model_name"],
            "action": event["action"],
            "alias": alias,
            "from_version": move["from_version"],
            "to_version": actual,
            "actor": governance["actor"],
            "approved_by": event["approved_by"],
            "reason": event["reason"],
            "gate_report": event["gate_report"],
            "catalog": context["catalog"],
            "kedro_run_id": context["kedro_run_id"],
            "actor_source": governance["actor_source"],
            "via": event["via"],
            "host": governance["host"],
            "policy_sha256": governance["policy_sha256"],
            "policy": json.dumps(governance["policy"], sort_keys=True, default=str),
        })
        logger.info(
            "audit: %s %s@%s %s -> %s by %s (%s) on %s via %s, policy %s", event["action"], event["model_name"], alias,
            move["from_version"], actual, governance["actor"], governance["actor_source"], governance["host"], event["via"],
            governance["policy_sha256"],
        )
    frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    text = [c for c in AUDIT_COLUMNS if c != "event_ts"]
    return frame.astype({c: "string" for c in text}).astype({"event_ts": "datetime64[us, UTC]"})


def release_pipeline(step: str, plan: Callable[..., tuple[list, dict]], inputs: list[str]) -> Pipeline:
    """Plan registry actions and an event from ``inputs``, apply them, audit the alias moves."""
    return Pipeline(
        [
            node(plan, inputs, [f"{step}_model_registry@actions", f"{step}_event"], name=f"plan_{step}"),
            node(
                record_alias_moves, [f"{step}_event", f"{step}_model_registry@after", "release_context", "release_governance"],
                f"{step}_model_promotions", name=f"audit_{step}",
            ),
        ],
        tags=[step, "release"],
    )
