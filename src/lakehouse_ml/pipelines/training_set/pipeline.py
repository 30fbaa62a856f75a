"""Training-set pipeline: spine → point-in-time lookups → Delta, with a leakage guard and demo."""

from kedro.pipeline import Pipeline, node

from lakehouse_ml.pipelines.stage import as_stage
from lakehouse_ml.pipelines.training_set.nodes import (
    assemble_training_set,
    build_label_spine,
    check_point_in_time,
    leakage_demo,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Create the training_set pipeline."""
    stage = Pipeline(
        [
            node(
                func=build_label_spine,
                inputs=["orders_silver@spark", "params:training_set.spine"],
                outputs="label_spine",
                name="build_label_spine",
            ),
            node(
                func=assemble_training_set,
                inputs=[
                    "label_spine",
                    "feature_tables@spark",
                    "orders_silver@info",
                    "feature_tables@info",
                    "training_set_recorded",
                    "params:feature_tables",
                    "params:on_demand_features",
                    "params:training_set",
                ],
                # Saved in this order: the rows, then the spec that says how they were made.
                outputs=["training_set@spark", "training_set_spec"],
                name="assemble_training_set",
            ),
            node(
                func=check_point_in_time,
                inputs=["training_set@spark", "params:feature_tables", "params:training_set"],
                outputs="point_in_time_proof",
                name="check_point_in_time",
            ),
            node(
                func=leakage_demo,
                inputs=[
                    "training_set@spark",
                    "label_spine",
                    "feature_tables@spark",
                    "params:feature_tables",
                    "params:training_set",
                ],
                outputs="leakage_demo_metrics",
                name="leakage_demo",
            ),
        ],
        tags=["training_set"],
    )
    return as_stage("training_set", stage)
