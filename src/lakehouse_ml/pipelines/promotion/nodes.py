"""Promotion nodes: plan moving ``champion`` to the ``challenger`` version.

The old champion (if any) becomes ``previous_champion``, and the promoted version loses the
``challenger`` alias: a challenger is a version waiting for promotion, so promoting twice in a row
is refused ("nothing to promote") instead of silently re-promoting. Where
``promotion.require_approval`` is true (staging, prod) the version needs an ``approved_by`` tag;
where ``promotion.forbid_self_approval`` is true (prod) the approver cannot be the actor. The
actor is the run's governance record (the identity the process runs as), never a parameter.
"""

from __future__ import annotations

import logging
from typing import Any

from lakehouse_ml.registry import ReleaseRefusedError, alias_moves, check_model, release_event, release_tags, tag_actions

logger = logging.getLogger(__name__)


def approval_instructions(model_name: str, version: str, tags: dict[str, str]) -> str:
    """How to approve ``version``: what to review and the one-line command that tags it, on the
    registry this run uses (a team's tracking server, or the project's SQLite store)."""
    import mlflow

    from lakehouse_ml.tracking_server import shown_uri

    registry = shown_uri(mlflow.get_registry_uri())
    as_user = (
        " with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD set to your own user on that server"
        if registry.startswith(("http://", "https://")) else ""
    )
    return (
        f"promotion of {model_name} version {version} needs approval in this environment "
        "(promotion.require_approval is true) and the version has no 'approved_by' tag. Review it "
        f"(gates report: {tags.get('gates_report', 'see the version description')}; description and lineage tags "
        f"in the MLflow UI under Models > {model_name} > Version {version}), then approve it from the project root{as_user}:\n"
        f"  MLFLOW_TRACKING_URI={registry} python -c \"from mlflow import MlflowClient; "
        f"MlflowClient().set_model_version_tag('{model_name}', '{version}', 'approved_by', '<your name>')\"\n"
        "and run the promotion pipeline again (kedro run --env <env> --pipeline promotion)."
    )


BLOCK_TAG = "promotion_blocked"  # set by monitoring's block_promotion action


def blocked_instructions(model_name: str, version: str, tags: dict[str, str]) -> str:
    """Why a challenger is blocked, and how to release the block once the cause is fixed."""
    return (
        f"{model_name} version {version} is blocked from promotion: {tags.get(BLOCK_TAG)}. Once the upstream data is "
        f"fixed (or the challenger retrained on good data), remove the block: python -c \"from mlflow import MlflowClient; "
        f"MlflowClient().delete_model_version_tag('{model_name}', '{version}', '{BLOCK_TAG}')\""
    )


def _same_person(approver: str, actor: str) -> bool:
    # Approvers type their name into a tag: "Alice " must not pass for someone other than "alice".
    return approver.strip().casefold() == actor.strip().casefold()


def plan_promotion(
    registry_state: dict[str, Any], registry: dict[str, Any], promotion: dict[str, Any], governance: dict[str, Any],
    via: str = "promotion",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Alias moves promoting the challenger to champion (its version tagged with who, where and under
    which policy), refused when the state or policy forbids it."""
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
    if promotion["require_approval"] and promotion.get("forbid_self_approval") and _same_person(tags["approved_by"], actor):
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
        "promotion: %s version %s becomes '%s' (%s)", name, challenger, aliases["champion"],
        f"was version {champion}" if champion else "first champion",
    )
    event = release_event(
        "promote", name, moves, reason=promotion["reason"], approved_by=tags.get("approved_by"),
        gate_report=tags.get("gates_report"), via=via,
    )
    return actions, event


def plan_automatic_promotion(
    registry_state: dict[str, Any], registry: dict[str, Any], promotion: dict[str, Any], governance: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The default run's release step: promote the challenger where ``promotion.auto_promote`` allows, else nothing.

    Never refuses (the run goes on to score with the champion it has): without a challenger, or
    without the approval the environment requires, it plans no move and says what is waiting.
    """
    name = check_model(registry_state, registry)
    aliases, current = registry["aliases"], registry_state["aliases"]
    challenger, champion = current.get(aliases["challenger"]), current.get(aliases["champion"])
    serving = f"version {champion}" if champion else "no version"
    waiting = None
    if challenger is None:
        waiting = f"no '{aliases['challenger']}' to promote"
    elif not promotion.get("auto_promote", False):
        waiting = f"version {challenger} waits as '{aliases['challenger']}' (promotion.auto_promote is false here: kedro run --pipeline promotion)"
    elif registry_state["versions"][challenger]["tags"].get(BLOCK_TAG):
        waiting = blocked_instructions(name, challenger, registry_state["versions"][challenger]["tags"])
    elif promotion["require_approval"] and not registry_state["versions"][challenger]["tags"].get("approved_by"):
        waiting = f"version {challenger} waits for approval ({approval_instructions(name, challenger, {})})"
    if waiting:
        logger.info("automatic promotion: %s: %s; '%s' stays %s", name, waiting, aliases["champion"], serving)
        return [], release_event("promote", name, [], via="auto_promotion")
    reason = promotion.get("auto_reason", promotion["reason"])
    return plan_promotion(registry_state, registry, {**promotion, "reason": reason}, governance, via="auto_promotion")


def name_the_champion(registry_after: dict[str, Any], registry: dict[str, Any]) -> dict[str, Any]:
    """The aliases after the release step (``champion`` None: nothing to score with yet)."""
    name = check_model(registry_after, registry)
    aliases = {role: registry_after["aliases"].get(alias) for role, alias in registry["aliases"].items()}
    logger.info("release: %s %s", name, ", ".join(f"{role}={version or '-'}" for role, version in aliases.items()))
    return {"model_name": name, **aliases}
