"""Auto-promotion pipeline (the default run's release step): the registry as registration left it →
the promotion's alias moves where ``promotion.auto_promote`` allows (dev), none elsewhere →
ml.model_promotions rows; then the champion it leaves, for batch inference to wait for."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.auto_promotion.nodes import name_the_champion, plan_automatic_promotion
from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.release import release_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the auto_promotion pipeline."""
    # Reading the registry once registration's moves are on record orders this step after
    # registration's audit: no alias moves on before the registration is recorded.
    release = release_pipeline(
        "auto_promotion",
        plan_automatic_promotion,
        ["registration_registry_recorded", "params:registry", "params:promotion", "release_governance"],
    )
    # `champion_model@released` shares its base name with inference's `champion_model@…` inputs, so
    # in the default run Kedro resolves the champion for scoring only after this step, and it names
    # the champion from the registry once the promotion is on record.
    stage = release + Pipeline(
        [
            node(
                func=name_the_champion,
                inputs=["auto_promotion_registry_recorded", "params:registry"],
                outputs="champion_model@released",
                name="name_the_champion",
            )
        ],
        tags=["auto_promotion", "release"],
    )
    return as_stage("auto_promotion", stage)
