"""Rollback nodes: plan moving ``champion`` back to the ``previous_champion`` version in one step.

The plan itself, :func:`lakehouse_ml.release.plan_rollback`, is release logic monitoring's
rollback action shares: it lives in the release library, and this stage runs it.
"""

from lakehouse_ml.release import plan_rollback

__all__ = ["plan_rollback"]
