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
from lakehouse_ml.release import record_alias_moves


def create_pipeline(**kwargs) -> Pipeline:
    """Create the monitoring pipeline."""
    return Pipeline(
        [
            node(
                collect_served_rows, ["churn_predictions", "inference_log@monitoring", "params:monitoring"], "served_rows",
                name="collect_served_rows",
            ),
            node(
                served_baselines, ["served_rows", "monitoring_baselines@read", "model_registry"],
                ["served_baselines", "monitoring_scope"], name="served_baselines",
            ),
            node(served_inputs, ["served_rows", "served_baselines"], "served_inputs", name="served_inputs"),
            node(compute_drift, ["served_inputs", "served_baselines", "params:monitoring"], "drift_metrics", name="compute_drift"),
            node(label_served_rows, ["served_rows", "orders_silver@spark", "params:training_set"], "labeled_served_rows", name="label_served_rows"),
            node(
                compute_performance, ["labeled_served_rows", "served_baselines", "params:monitoring"], "performance_metrics",
                name="compute_performance",
            ),
            node(
                compute_data_quality,
                ["served_rows", "drift_metrics", "rejected_predictions", "served_baselines", "monitoring_scope", "params:monitoring"],
                "data_quality", name="compute_data_quality",
            ),
            node(
                decide_actions,
                [
                    "drift_metrics", "performance_metrics", "data_quality", "monitoring_scope", "monitoring_actions_recorded",
                    "model_promotions@monitoring", "model_registry",
                    "params:registry", "params:monitoring_rules", "params:monitoring", "release_context",
                ],
                "monitoring_decisions", name="decide_actions",
            ),
            node(
                plan_monitoring_actions, ["monitoring_decisions", "model_registry", "params:registry", "release_governance"],
                ["monitoring_model_registry@actions", "monitoring_event", "retrain_request", "monitoring_outcome"],
                name="plan_monitoring_actions",
            ),
            node(
                record_alias_moves, ["monitoring_event", "monitoring_model_registry@after", "release_context", "release_governance"],
                "monitoring_model_promotions", name="audit_monitoring",
            ),
            node(
                record_actions, ["monitoring_decisions", "monitoring_outcome", "monitoring_model_registry@after"],
                "monitoring_actions", name="record_actions",
            ),
            node(
                build_monitoring_report,
                ["drift_metrics", "performance_metrics", "data_quality", "monitoring_actions", "monitoring_scope", "release_context"],
                ["monitoring_report_figures", "monitoring_report_html"], name="build_monitoring_report",
            ),
            node(
                summarise_monitoring, ["drift_metrics", "performance_metrics", "data_quality", "monitoring_actions", "monitoring_scope"],
                "monitoring_metrics", name="summarise_monitoring",
            ),
        ],
        tags=["monitoring"],
    )
