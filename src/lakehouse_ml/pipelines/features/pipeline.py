"""Features pipeline: every feature table declared in conf/<env>/feature_tables, refreshed together.

stage (plan + compute each table's scope) → validate every table → MERGE each table and stamp its
contract → record the refreshes. Which tables exist, what they compute and from which source is
configuration: no node names a table.
"""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.features.nodes import record_refreshes, stage_refreshes, validate_refreshes
from lakehouse_ml.pipelines.ingest.pipeline import SOURCES
from lakehouse_ml.pipelines.stage import as_stage

# The lakehouse tables a contract may name as its `source`, by that name: what ingest writes.
SOURCE_TABLES = {
    **{f"silver.{source}": f"{source}_silver@versions" for source in SOURCES},
    "gold.customer_daily_activity": "customer_daily_activity@versions",
}


def create_pipeline(**kwargs) -> Pipeline:
    """Create the features pipeline."""
    stage = Pipeline(
        [
            node(
                func=stage_refreshes,
                inputs={
                    "current": "feature_tables.current",
                    "refreshes": "feature_refreshes",
                    "feature_tables": "params:feature_tables",
                    "features": "params:features",
                    **SOURCE_TABLES,
                },
                outputs=["feature_tables.staged", "feature_refresh_plans"],
                name="stage_refreshes",
            ),
            node(
                func=validate_refreshes,
                inputs=["feature_tables.staged", "feature_refresh_plans", "params:feature_tables"],
                outputs=["feature_tables@spark", "feature_summaries", "feature_metrics"],
                name="validate_refreshes",
            ),
            node(
                func=record_refreshes,
                inputs=[
                    "feature_tables.staged",
                    "feature_refresh_plans",
                    "feature_summaries",
                    "feature_tables@info",
                    "feature_refreshes",
                    "params:feature_tables",
                ],
                # Appended only after every table's MERGE and stamp committed: the next plan reads it.
                outputs=["feature_refresh_log", "feature_summary_log"],
                name="record_refreshes",
            ),
        ],
        tags=["features"],
    )
    return as_stage("features", stage)
