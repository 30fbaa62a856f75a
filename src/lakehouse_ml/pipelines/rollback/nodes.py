"""Rollback nodes: plan moving ``champion`` back to the ``previous_champion`` version in one step.

``previous_champion`` is used up: it is removed, so a second rollback in a row is refused rather
than flipping between two versions; the version rolled back from keeps no alias.
"""

from __future__ import annotations

import logging
from typing import Any

from lakehouse_ml.registry import ReleaseRefusedError, alias_moves, check_model, release_event, release_tags, tag_actions

logger = logging.getLogger(__name__)


def plan_rollback(
    registry_state: dict[str, Any], registry: dict[str, Any], rollback: dict[str, Any], governance: dict[str, Any],
    via: str = "rollback",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Alias moves restoring the previous champion (its version tagged with who, where and under which
    policy), refused when there is none. ``via``: the pipeline that rolls back (``monitoring`` for its rule)."""
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
    logger.warning("rollback: %s '%s' goes back from version %s to version %s", name, aliases["champion"], champion, previous)
    event = release_event(
        "rollback", name, moves, reason=rollback["reason"],
        gate_report=registry_state["versions"][previous]["tags"].get("gates_report"), via=via,
    )
    return actions, event
