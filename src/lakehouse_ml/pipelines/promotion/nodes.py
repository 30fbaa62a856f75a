"""Promotion nodes: plan moving ``champion`` to the ``challenger`` version.

The plan itself, :func:`lakehouse_ml.release.plan_promotion`, is release logic the automatic
promotion of the default run shares: it lives in the release library, and this stage runs it.
"""

from lakehouse_ml.release import plan_promotion

__all__ = ["plan_promotion"]
