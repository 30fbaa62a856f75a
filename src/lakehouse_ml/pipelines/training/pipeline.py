"""Training pipeline: study result → candidate plan → threshold on validation, refit → test-window
evaluation → the candidate run (model, metrics, plots, reports)."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.pipelines.training.nodes import (
    choose_operating_threshold,
    evaluate_candidate,
    log_candidate,
    plan_candidate,
    refit_candidate,
)

CANDIDATE_PLOTS = ("roc_plot", "pr_plot", "calibration_plot", "confusion_matrix_plot", "feature_importance_plot")


def create_pipeline(**kwargs) -> Pipeline:
    """Create the training pipeline."""
    stage = Pipeline(
        [
            node(
                func=plan_candidate,
                inputs=[
                    "training_set@pandas",
                    "tuning_study_result",
                    "params:feature_tables",
                    "params:on_demand_features",
                    "params:tuning",
                ],
                outputs="candidate_plan",
                name="plan_candidate",
            ),
            node(
                func=choose_operating_threshold,
                inputs=["training_set@pandas", "candidate_plan", "params:training"],
                outputs="operating_threshold",
                name="choose_operating_threshold",
            ),
            node(
                func=refit_candidate,
                inputs=["training_set@pandas", "candidate_plan", "params:training"],
                outputs="candidate_fit",
                name="refit_candidate",
            ),
            node(
                func=evaluate_candidate,
                inputs=[
                    "candidate_fit",
                    "training_set@pandas",
                    "candidate_plan",
                    "operating_threshold",
                    "params:training",
                ],
                outputs=["candidate_test_scores", "candidate_evaluation"],
                name="evaluate_candidate",
            ),
            node(
                func=log_candidate,
                inputs=[
                    "candidate_fit",
                    "candidate_plan",
                    "operating_threshold",
                    "candidate_test_scores",
                    "candidate_evaluation",
                    "tuning_study_result",
                    "training_set_spec",
                    "mlflow_node_run",
                ],
                outputs={
                    "model": "candidate_model",
                    "metrics": "candidate_metrics",
                    **{plot: f"candidate_{plot}" for plot in CANDIDATE_PLOTS},
                    "optuna_history": "candidate_optuna_history",
                    "slice_metrics": "candidate_slice_metrics",
                    "provenance": "candidate_provenance",
                    "pointer": "candidate@pointer",
                },
                name="log_candidate",
            ),
        ],
        tags=["training"],
    )
    return as_stage("training", stage)
