"""The retrain pipeline: a new challenger from the current data (what monitoring's retrain action runs)."""

from lakehouse_ml.pipelines.retrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
