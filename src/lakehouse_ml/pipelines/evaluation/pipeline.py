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
from lakehouse_ml.pipelines.stage import as_stage


def create_pipeline(**kwargs) -> Pipeline:
    """Create the evaluation pipeline."""
    stage = Pipeline(
        [
            node(
                func=score_test_window,
                inputs=[
                    "candidate@model",
                    "champion_model_for_evaluation",
                    "training_set@pandas",
                    "training_set_spec",
                    "params:training",
                ],
                outputs=["evaluation_scores", "evaluation_context"],
                name="score_test_window",
            ),
            node(
                func=check_serving_readiness,
                inputs=[
                    "candidate@model",
                    "champion_model_for_evaluation",
                    "training_set@pandas",
                    "params:feature_tables",
                    "params:on_demand_features",
                    "params:evaluation",
                ],
                outputs="serving_readiness",
                name="check_serving_readiness",
            ),
            node(
                func=apply_gates,
                inputs=[
                    "evaluation_scores",
                    "evaluation_context",
                    "serving_readiness",
                    "params:evaluation",
                    "params:training",
                    "mlflow_node_run",
                ],
                outputs=["evaluation_report", "evaluation_metrics"],
                name="apply_gates",
            ),
            node(
                func=profile_monitoring_baseline,
                inputs=[
                    "candidate@model",
                    "training_set@spark",
                    "evaluation_scores",
                    "evaluation_context",
                    "params:feature_tables",
                    "params:monitoring",
                    "params:training",
                ],
                outputs="monitoring_baselines@write",
                name="profile_monitoring_baseline",
            ),
        ],
        tags=["evaluation"],
    )
    return as_stage("evaluation", stage)
