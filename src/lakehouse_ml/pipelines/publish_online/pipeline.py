"""Publish-online pipeline: feature tables (Delta) → changed latest rows per key → online store → summary."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.publish_online.nodes import plan_online_publish, report_online_publish
from lakehouse_ml.pipelines.stage import as_stage


def create_pipeline(**kwargs) -> Pipeline:
    """Create the publish_online pipeline."""
    stage = Pipeline(
        [
            node(
                func=plan_online_publish,
                inputs=[
                    "feature_tables@spark",
                    "feature_tables@info",
                    "online_store_published",
                    "params:feature_tables",
                    "params:training_set",
                    "params:publish_online",
                ],
                outputs=["online_store", "online_publish_summary"],
                name="plan_online_publish",
            ),
            node(
                func=report_online_publish,
                inputs=["online_store", "online_publish_summary"],
                outputs=None,
                name="report_online_publish",
            ),
        ],
        tags=["publish_online"],
    )
    return as_stage("publish_online", stage)
