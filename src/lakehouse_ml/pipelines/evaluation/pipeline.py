"""Evaluation pipeline: candidate + champion → scores on the candidate's test window → serving
readiness (signature, smoke test, latency) → gates report (reports/gates.json in MLflow); the
candidate's monitoring baseline (input profiles, test-window scores, reference performance)."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.evaluation.nodes import (
    apply_gates,
    check_serving_readiness,
    profile_monitoring_baseline,
    score_test_window,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Create the evaluation pipeline."""
    return Pipeline(
        [
            node(
                score_test_window,
                ["candidate@model", "champion_model_for_evaluation", "training_set@pandas", "training_set_spec", "params:training"],
                ["evaluation_scores", "evaluation_context"],
                name="score_test_window",
            ),
            node(
                check_serving_readiness,
                [
                    "candidate@model", "champion_model_for_evaluation", "training_set@pandas",
                    "params:feature_tables", "params:on_demand_features", "params:evaluation",
                ],
                "serving_readiness",
                name="check_serving_readiness",
            ),
            node(
                apply_gates,
                ["evaluation_scores", "evaluation_context", "serving_readiness", "params:evaluation", "params:training"],
                ["evaluation_report", "evaluation_metrics"],
                name="apply_gates",
            ),
            node(
                profile_monitoring_baseline,
                [
                    "candidate@model", "training_set@spark", "evaluation_scores", "evaluation_context",
                    "params:feature_tables", "params:monitoring", "params:training",
                ],
                "monitoring_baselines@write",
                name="profile_monitoring_baseline",
            ),
        ],
        tags=["evaluation"],
    )
