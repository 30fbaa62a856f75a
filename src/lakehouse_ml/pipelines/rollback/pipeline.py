"""Rollback pipeline: registry state → alias moves (champion ← previous_champion, which is then
removed) → ml.model_promotions rows."""

from kedro.pipeline import Pipeline

from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.release import plan_rollback, release_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the rollback pipeline."""
    stage = release_pipeline(
        "rollback", plan_rollback, ["model_registry", "params:registry", "params:rollback", "release_governance"]
    )
    return as_stage("rollback", stage)
