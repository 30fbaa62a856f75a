"""Tuning pipeline: training set → rolling-origin folds → Optuna study (best trial kept for training)."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.pipelines.tuning.nodes import prepare_tuning, tune


def create_pipeline(**kwargs) -> Pipeline:
    """Create the tuning pipeline."""
    stage = Pipeline(
        [
            node(
                func=prepare_tuning,
                inputs=["training_set@pandas", "params:feature_tables", "params:on_demand_features", "params:tuning"],
                outputs=["tuning_train", "tuning_folds", "tuning_test_cutoffs", "tuning_columns"],
                name="prepare_tuning",
            ),
            node(
                func=tune,
                inputs=[
                    "tuning_train",
                    "tuning_folds",
                    "tuning_columns",
                    "params:tuning",
                    "optuna_storage",
                    "mlflow_node_run",
                ],
                outputs="tuning_study_result",
                name="tune",
            ),
        ],
        tags=["tuning"],
    )
    return as_stage("tuning", stage)
