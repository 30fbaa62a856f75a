"""Inference pipeline: scoring spine → point-in-time features → contract checks and champion
scores (one materialised pass) → predictions + rejections (Delta) → summary."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.inference.nodes import (
    build_scoring_spine,
    check_scoring_rows,
    look_up_scoring_features,
    report_inference,
    score_scoring_rows,
    select_predictions,
    select_rejections,
)
from lakehouse_ml.pipelines.stage import as_stage


def create_pipeline(**kwargs) -> Pipeline:
    """Create the inference pipeline."""
    stage = Pipeline(
        [
            node(
                func=build_scoring_spine,
                inputs=["orders_silver@spark", "params:inference", "params:training_set"],
                outputs=["scoring_spine", "scoring_time"],
                name="build_scoring_spine",
            ),
            node(
                func=look_up_scoring_features,
                inputs=[
                    "scoring_spine",
                    "feature_tables@spark",
                    "scoring_time",
                    "params:feature_tables",
                    "params:on_demand_features",
                    "params:training_set",
                ],
                outputs="scoring_features",
                name="look_up_scoring_features",
            ),
            node(
                func=score_scoring_rows,
                inputs=[
                    # The only consumer of the champion: its alias is resolved once per run.
                    "scoring_features",
                    "champion_model@sklearn",
                    "scoring_time",
                    "feature_tables@info",
                    "orders_silver@info",
                    "params:feature_tables",
                    "params:on_demand_features",
                    "params:inference",
                ],
                outputs=["inference_scored_rows", "inference_release"],
                name="score_scoring_rows",
            ),
            node(
                func=check_scoring_rows,
                inputs=["inference_scored_rows", "inference_release", "params:inference"],
                outputs="inference_summary",
                name="check_scoring_rows",
            ),
            node(
                func=select_predictions,
                inputs=["inference_scored_rows", "inference_summary"],
                outputs="churn_predictions",
                name="select_predictions",
            ),
            node(
                func=select_rejections,
                inputs=["inference_scored_rows", "rejected_predictions_recorded", "inference_summary"],
                outputs="rejected_predictions",
                name="select_rejections",
            ),
            node(
                func=report_inference,
                inputs=["churn_predictions", "inference_summary"],
                outputs="inference_metrics",
                name="report_inference",
            ),
        ],
        tags=["inference"],
    )
    return as_stage("inference", stage)
