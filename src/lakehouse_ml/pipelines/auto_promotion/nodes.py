"""Auto-promotion nodes: the default run's release step, promoting where ``promotion.auto_promote`` allows."""

from __future__ import annotations

import logging
from typing import Any

from lakehouse_ml.release import (
    BLOCK_TAG,
    approval_instructions,
    blocked_instructions,
    check_model,
    plan_promotion,
    release_event,
)

logger = logging.getLogger(__name__)


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
