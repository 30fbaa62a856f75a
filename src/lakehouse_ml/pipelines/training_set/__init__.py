"""Training set: label spine, point-in-time feature lookups, leakage proof."""

from lakehouse_ml.pipelines.training_set.pipeline import create_pipeline

__all__ = ["create_pipeline"]
