"""Training pipeline: refit the tuned configuration as the candidate model and log it."""

from lakehouse_ml.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
