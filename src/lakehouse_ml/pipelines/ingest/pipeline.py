"""Ingest pipeline: one namespaced copy of the source pipeline per source, then gold."""

from kedro.pipeline import Pipeline, node, pipeline

from lakehouse_ml.pipelines.ingest.nodes import (
    build_daily_activity,
    land_deliveries,
    reconcile_to_silver,
    report_ingest,
    split_batch,
    type_batch,
)
from lakehouse_ml.pipelines.stage import as_stage

# Every source the project knows. Only orders must be delivered: a source without landing files
# yields empty (but existing) bronze/silver tables and the loop runs without it.
SOURCES = ("orders", "customers", "sessions", "tickets")
ACTIVITY_SOURCES = ("orders", "sessions", "tickets")


def _source_pipeline() -> Pipeline:
    """The template run for each source: land, type, quarantine and classify, reconcile to silver.

    Typed and classified rows are materialised to work tables once: Spark Connect engines do not
    cache, and every later count or write would otherwise parse the raw lines again.
    """
    return Pipeline(
        [
            node(
                func=land_deliveries,
                inputs=["landing", "ingest_log", "params:source", "params:ingest"],
                outputs=["bronze", "batch_ids"],
                name="land_deliveries",
            ),
            node(
                func=type_batch,
                inputs=["bronze", "batch_ids", "params:source"],
                outputs="typed_records",
                name="type_batch",
            ),
            node(
                func=split_batch,
                inputs=["typed_records", "silver_versions", "batch_ids", "params:source", "params:ingest"],
                outputs=["quarantine", "classified_records"],
                name="split_batch",
            ),
            node(
                func=reconcile_to_silver,
                inputs=[
                    "classified_records",
                    "quarantine",
                    "bronze",
                    "batch_ids",
                    "params:source",
                    "params:ingest",
                ],
                # Saved in this order: silver first, then the audit row that marks the batches
                # as ingested (see reconcile_to_silver).
                outputs=["silver", "ingest_audit", "batch_audit"],
                name="reconcile_to_silver",
            ),
        ],
        tags=["ingest"],
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ingest pipeline for every source plus the gold daily activity table."""
    per_source = sum(
        (
            pipeline(
                _source_pipeline(),
                namespace=source,
                inputs={"landing": f"{source}_landing@spark"},
                # Shared with later stages under plain names; the rest stays in the namespace.
                outputs={
                    "silver": f"{source}_silver@spark",
                    "batch_audit": f"{source}_batch_audit",
                },
                parameters={"params:source": f"params:ingest.sources.{source}", "params:ingest": "params:ingest"},
                tags=[source],
            )
            for source in SOURCES
        ),
        Pipeline([]),
    )
    gold = Pipeline(
        [
            node(
                func=build_daily_activity,
                inputs={
                    **{s: f"{s}_silver@versions" for s in ACTIVITY_SOURCES},
                    "gold_table": "customer_daily_activity.versions",
                    "gold": "params:gold",
                    "ingest": "params:ingest",
                },
                # Saved in this order: the rows, then the silver versions they reflect.
                outputs=["customer_daily_activity@spark", "customer_daily_activity_sources"],
                name="build_daily_activity",
            ),
            node(
                func=report_ingest,
                inputs=[f"{s}_batch_audit" for s in SOURCES],
                outputs="ingest_summary",
                name="report_ingest",
            ),
        ],
        tags=["ingest"],
    )
    return as_stage("ingest", per_source + gold)
