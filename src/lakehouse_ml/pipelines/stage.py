"""A stage of the loop as a Kedro modular pipeline."""

from kedro.pipeline import Pipeline, pipeline


def as_stage(name: str, nodes: Pipeline) -> Pipeline:
    """``nodes`` in the namespace ``name``: kedro-viz draws the stage as one box that opens onto its
    nodes, and node names read ``<name>.<node>``. Datasets and parameters keep their catalog names,
    so the stages still meet through them."""
    return pipeline(nodes, namespace=name, prefix_datasets_with_namespace=False)
