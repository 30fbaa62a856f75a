"""The release vocabulary and plans shared by the registration, promotion, rollback and monitoring pipelines.

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
BLOCK_TAG = "promotion_blocked"  # set by monitoring's block_promotion action
AUDIT_COLUMNS = [
    "event_id",
    "event_ts",
    "model_name",
    "action",
    "alias",
    "from_version",
    "to_version",
    "actor",
    "approved_by",
    "reason",
    "gate_report",
    "catalog",
    "kedro_run_id",
    # Added with release governance: earlier rows of an existing table read null here.
    "actor_source",
    "via",
    "host",
    "policy_sha256",
    "policy",
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


def alias_moves(
    state: dict[str, Any], targets: dict[str, str | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
        f"{step}.policy": json.dumps(
            {"env": governance["policy"]["env"], **governance["policy"]["settings"]}, sort_keys=True
        ),
    }


def tag_actions(version: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    """``set_version_tag`` actions writing ``tags`` on ``version``."""
    return [
        {"action": "set_version_tag", "version": version, "key": key, "value": value} for key, value in tags.items()
    ]


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
        rows.append(
            {
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
            }
        )
        logger.info(
            "audit: %s %s@%s %s -> %s by %s (%s) on %s via %s, policy %s",
            event["action"],
            event["model_name"],
            alias,
            move["from_version"],
            actual,
            governance["actor"],
            governance["actor_source"],
            governance["host"],
            event["via"],
            governance["policy_sha256"],
        )
    frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    text = [c for c in AUDIT_COLUMNS if c != "event_ts"]
    return frame.astype({c: "string" for c in text}).astype({"event_ts": "datetime64[us, UTC]"})


# ---------------------------------------------------------------- release plans


def approval_instructions(model_name: str, version: str, tags: dict[str, str]) -> str:
    """How to approve ``version``: what to review and the one-line command that tags it, on the
    registry this run uses (a team's tracking server, or the project's SQLite store)."""
    import mlflow

    from lakehouse_ml.tracking_server import shown_uri

    registry = shown_uri(mlflow.get_registry_uri())
    as_user = (
        " with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD set to your own user on that server"
        if registry.startswith(("http://", "https://"))
        else ""
    )
    return (
        f"promotion of {model_name} version {version} needs approval in this environment "
        "(promotion.require_approval is true) and the version has no 'approved_by' tag. Review it "
        f"(gates report: {tags.get('gates_report', 'see the version description')}; description and lineage tags "
        f"in the MLflow UI under Models > {model_name} > Version {version}), then approve it from the project root{as_user}:\n"
        f'  MLFLOW_TRACKING_URI={registry} python -c "from mlflow import MlflowClient; '
        f"MlflowClient().set_model_version_tag('{model_name}', '{version}', 'approved_by', '<your name>')\"\n"
        "and run the promotion pipeline again (kedro run --env <env> --pipeline promotion)."
    )


def blocked_instructions(model_name: str, version: str, tags: dict[str, str]) -> str:
    """Why a challenger is blocked, and how to release the block once the cause is fixed."""
    return (
        f"{model_name} version {version} is blocked from promotion: {tags.get(BLOCK_TAG)}. Once the upstream data is "
        f'fixed (or the challenger retrained on good data), remove the block: python -c "from mlflow import MlflowClient; '
        f"MlflowClient().delete_model_version_tag('{model_name}', '{version}', '{BLOCK_TAG}')\""
    )


def _same_person(approver: str, actor: str) -> bool:
    # Approvers type their name into a tag: "Alice " must not pass for someone other than "alice".
    return approver.strip().casefold() == actor.strip().casefold()


def plan_promotion(
    registry_state: dict[str, Any],
    registry: dict[str, Any],
    promotion: dict[str, Any],
    governance: dict[str, Any],
    via: str = "promotion",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Alias moves promoting the challenger to champion (its version tagged with who, where and under
    which policy), refused when the state or policy forbids it.

    The old champion (if any) becomes ``previous_champion``, and the promoted version loses the
    ``challenger`` alias: a challenger is a version waiting for promotion, so promoting twice in a
    row is refused ("nothing to promote") instead of silently re-promoting. Where
    ``promotion.require_approval`` is true (staging, prod) the version needs an ``approved_by`` tag;
    where ``promotion.forbid_self_approval`` is true (prod) the approver cannot be the actor. The
    actor is the run's governance record (the identity the process runs as), never a parameter.
    """
    name = check_model(registry_state, registry)
    aliases, current = registry["aliases"], registry_state["aliases"]
    challenger, champion = current.get(aliases["challenger"]), current.get(aliases["champion"])
    if challenger is None:
        raise ReleaseRefusedError(
            f"nothing to promote: {name} has no '{aliases['challenger']}' alias. A candidate gets it when it "
            "passes the gates: kedro run --pipeline evaluation, then kedro run --pipeline registration"
        )
    if challenger == champion:
        raise ReleaseRefusedError(f"{name} version {challenger} is already '{aliases['champion']}'")
    tags = registry_state["versions"][challenger]["tags"]
    if tags.get("validation_status") != "passed":
        raise ReleaseRefusedError(
            f"{name} version {challenger} holds '{aliases['challenger']}' but its validation_status is "
            f"{tags.get('validation_status')!r}: only a version that passed the gates is promoted"
        )
    if tags.get(BLOCK_TAG):
        raise ReleaseRefusedError(blocked_instructions(name, challenger, tags))
    if promotion["require_approval"] and not tags.get("approved_by"):
        raise ReleaseRefusedError(approval_instructions(name, challenger, tags))
    actor = governance["actor"]
    if (
        promotion["require_approval"]
        and promotion.get("forbid_self_approval")
        and _same_person(tags["approved_by"], actor)
    ):
        raise ReleaseRefusedError(
            f"{name} version {challenger} was approved by '{tags['approved_by']}', who is also promoting it "
            f"(the actor is the identity this run has: '{actor}', {governance['actor_source']}): "
            "promotion.forbid_self_approval requires a second person. Someone other than the approver runs "
            "the promotion, as themselves"
        )
    targets = {aliases["previous_champion"]: champion} if champion else {}
    targets |= {aliases["champion"]: challenger, aliases["challenger"]: None}
    actions, moves = alias_moves(registry_state, targets)
    actions += tag_actions(challenger, release_tags("promotion", governance, via))
    logger.info(
        "promotion: %s version %s becomes '%s' (%s)",
        name,
        challenger,
        aliases["champion"],
        f"was version {champion}" if champion else "first champion",
    )
    event = release_event(
        "promote",
        name,
        moves,
        reason=promotion["reason"],
        approved_by=tags.get("approved_by"),
        gate_report=tags.get("gates_report"),
        via=via,
    )
    return actions, event


def plan_rollback(
    registry_state: dict[str, Any],
    registry: dict[str, Any],
    rollback: dict[str, Any],
    governance: dict[str, Any],
    via: str = "rollback",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Alias moves restoring the previous champion (its version tagged with who, where and under which
    policy), refused when there is none. ``via``: the pipeline that rolls back (``monitoring`` for its rule).

    ``previous_champion`` is used up: it is removed, so a second rollback in a row is refused rather
    than flipping between two versions; the version rolled back from keeps no alias.
    """
    name = check_model(registry_state, registry)
    aliases, current = registry["aliases"], registry_state["aliases"]
    previous, champion = current.get(aliases["previous_champion"]), current.get(aliases["champion"])
    if previous is None:
        raise ReleaseRefusedError(
            f"nothing to roll back to: {name} has no '{aliases['previous_champion']}' alias (a promotion that "
            "replaces a champion sets it; a rollback uses it up). Promote a challenger instead, or point "
            f"'{aliases['champion']}' at an explicit version with MlflowClient().set_registered_model_alias"
        )
    actions, moves = alias_moves(registry_state, {aliases["champion"]: previous, aliases["previous_champion"]: None})
    actions += tag_actions(previous, release_tags("rollback", governance, via))
    logger.warning(
        "rollback: %s '%s' goes back from version %s to version %s", name, aliases["champion"], champion, previous
    )
    event = release_event(
        "rollback",
        name,
        moves,
        reason=rollback["reason"],
        gate_report=registry_state["versions"][previous]["tags"].get("gates_report"),
        via=via,
    )
    return actions, event


def audit_release(
    event: dict[str, Any], registry_after: dict[str, Any], context: dict[str, Any], governance: dict[str, Any]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The release's audit rows (``record_alias_moves``), and no further registry action.

    Saving that empty list to ``<step>_registry_recorded`` changes nothing; reading the registry
    through it is how a later release step (auto_promotion after registration) is ordered after
    this step's audit, so no alias moves on before the earlier moves are on record.
    """
    return record_alias_moves(event, registry_after, context, governance), []


def release_pipeline(step: str, plan: Callable[..., tuple[list, dict]], inputs: list[str]) -> Pipeline:
    """Plan registry actions and an event from ``inputs``, apply them, audit the alias moves; a later
    release step reads the registry as ``<step>_registry_recorded`` to run after that audit."""
    return Pipeline(
        [
            node(
                func=plan,
                inputs=inputs,
                outputs=[f"{step}_model_registry@actions", f"{step}_event"],
                name=f"plan_{step}",
            ),
            node(
                func=audit_release,
                inputs=[f"{step}_event", f"{step}_model_registry@after", "release_context", "release_governance"],
                outputs=[f"{step}_model_promotions", f"{step}_registry_recorded"],
                name=f"audit_{step}",
            ),
        ],
        tags=[step, "release"],
    )
