"""Promotion pipeline: registry state → alias moves (champion ← challenger, previous_champion ← old
champion, challenger removed), refused without approval where required → ml.model_promotions rows."""

from kedro.pipeline import Pipeline

from lakehouse_ml.pipelines.promotion.nodes import plan_promotion
from lakehouse_ml.registry import release_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the promotion pipeline."""
    return release_pipeline("promotion", plan_promotion, ["model_registry", "params:registry", "params:promotion", "release_context"])
