"""Monitoring pipeline: served rows (batch predictions + inference log) → baselines of the served
versions → drift, labels and performance, data quality (Delta) → rules → actions (alert or execute:
rollback and promotion blocks through the registry, retraining as a new `kedro run`) → report."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.monitoring.nodes import (
    build_monitoring_report,
    collect_served_rows,
    compute_data_quality,
    compute_drift,
    compute_performance,
    decide_actions,
    label_served_rows,
    plan_monitoring_actions,
    record_actions,
    served_baselines,
    served_inputs,
    summarise_monitoring,
)
from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.release import record_alias_moves


def create_pipeline(**kwargs) -> Pipeline:
    """Create the monitoring pipeline."""
    stage = Pipeline(
        [
            node(
                func=collect_served_rows,
                inputs=["churn_predictions", "inference_log@monitoring", "params:monitoring"],
                outputs="served_rows",
                name="collect_served_rows",
            ),
            node(
                func=served_baselines,
                inputs=["served_rows", "monitoring_baselines@read", "model_registry"],
                outputs=["served_baselines", "monitoring_scope"],
                name="served_baselines",
            ),
            node(
                func=served_inputs,
                inputs=["served_rows", "served_baselines"],
                outputs="served_inputs",
                name="served_inputs",
            ),
            node(
                func=compute_drift,
                inputs=["served_inputs", "served_baselines", "params:monitoring"],
                outputs="drift_metrics",
                name="compute_drift",
            ),
            node(
                func=label_served_rows,
                inputs=["served_rows", "orders_silver@spark", "params:training_set"],
                outputs="labeled_served_rows",
                name="label_served_rows",
            ),
            node(
                func=compute_performance,
                inputs=["labeled_served_rows", "served_baselines", "params:monitoring"],
                outputs="performance_metrics",
                name="compute_performance",
            ),
            node(
                func=compute_data_quality,
                inputs=[
                    "served_rows",
                    "drift_metrics",
                    "rejected_predictions",
                    "served_baselines",
                    "monitoring_scope",
                    "params:monitoring",
                ],
                outputs="data_quality",
                name="compute_data_quality",
            ),
            node(
                func=decide_actions,
                inputs=[
                    "drift_metrics",
                    "performance_metrics",
                    "data_quality",
                    "monitoring_scope",
                    "monitoring_actions_recorded",
                    "model_promotions@monitoring",
                    "model_registry",
                    "params:registry",
                    "params:monitoring_rules",
                    "params:monitoring",
                    "release_context",
                ],
                outputs="monitoring_decisions",
                name="decide_actions",
            ),
            node(
                func=plan_monitoring_actions,
                inputs=["monitoring_decisions", "model_registry", "params:registry", "release_governance"],
                outputs=[
                    "monitoring_model_registry@actions",
                    "monitoring_event",
                    "retrain_request",
                    "monitoring_outcome",
                ],
                name="plan_monitoring_actions",
            ),
            node(
                func=record_alias_moves,
                inputs=["monitoring_event", "monitoring_model_registry@after", "release_context", "release_governance"],
                outputs="monitoring_model_promotions",
                name="audit_monitoring",
            ),
            node(
                func=record_actions,
                inputs=["monitoring_decisions", "monitoring_outcome", "monitoring_model_registry@after"],
                outputs="monitoring_actions",
                name="record_actions",
            ),
            node(
                func=build_monitoring_report,
                inputs=[
                    "drift_metrics",
                    "performance_metrics",
                    "data_quality",
                    "monitoring_actions",
                    "monitoring_scope",
                    "release_context",
                ],
                outputs=["monitoring_report_figures", "monitoring_report_html"],
                name="build_monitoring_report",
            ),
            node(
                func=summarise_monitoring,
                inputs=[
                    "drift_metrics",
                    "performance_metrics",
                    "data_quality",
                    "monitoring_actions",
                    "monitoring_scope",
                ],
                outputs="monitoring_metrics",
                name="summarise_monitoring",
            ),
        ],
        tags=["monitoring"],
    )
    return as_stage("monitoring", stage)
