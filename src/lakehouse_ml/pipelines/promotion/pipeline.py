"""Promotion pipeline: registry state → alias moves (champion ← challenger, previous_champion ← old
champion, challenger removed), refused without approval where required, by the run's own identity
(release_governance) → ml.model_promotions rows with actor, host and policy."""

from kedro.pipeline import Pipeline

from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.release import plan_promotion, release_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the promotion pipeline."""
    stage = release_pipeline(
        "promotion", plan_promotion, ["model_registry", "params:registry", "params:promotion", "release_governance"]
    )
    return as_stage("promotion", stage)
