"""Registration pipeline: candidate + gates report + registry state → registry actions (a new version,
the challenger alias if it passed) → one ml.model_promotions row per alias move."""

from kedro.pipeline import Pipeline

from lakehouse_ml.pipelines.registration.nodes import plan_registration
from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.release import release_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the registration pipeline."""
    stage = release_pipeline(
        "registration",
        plan_registration,
        [
            "candidate@pointer",
            "candidate@run",
            "evaluation_report",
            "model_registry",
            "params:registry",
            "params:registration",
            "release_governance",
        ],
    )
    return as_stage("registration", stage)
